#!/usr/bin/env bash
# The order in which this session ran benchmarks/protocols/occluded_duke_cpu.yml on the 2-core CPU machine:
# the headline rows' first seed, the two most informative ablations, the headline rows' other seeds, then
# the other ablations. Finished runs are skipped, so it can be re-run to complete the protocol.
set -u
cd "$(dirname "$0")/.."
P=benchmarks/protocols/occluded_duke_cpu.yml
C=".venv/bin/python benchmarks/compare.py run --protocol $P"
$C --only BoT SBS OCNet SGR --seeds 0
$C --only "SGR, [RE(X); RE(X)] control" "OCNet, no backbone freeze"
$C --only BoT SBS OCNet SGR --seeds 1
$C --only BoT SBS OCNet SGR --seeds 2
$C
