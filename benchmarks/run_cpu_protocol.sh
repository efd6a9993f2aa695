#!/usr/bin/env bash
# The order in which this session ran benchmarks/protocols/occluded_duke_cpu.yml on the 2-core CPU machine:
# the headline rows' first seed, the ablations that explain them, then the headline rows' other seeds, then
# the rest. Finished runs are skipped, so it can be re-run to complete the protocol.
set -u
cd "$(dirname "$0")/.."
P=benchmarks/protocols/occluded_duke_cpu.yml
C=".venv/bin/python benchmarks/compare.py run --protocol $P"
$C --only BoT SBS OCNet SGR --seeds 0
$C --only "OCNet, SL off (Table 2 index 7)"
# (the second session, with the headline rows' seeds 1 and 2 still missing, ran them first)
$C --only BoT SBS OCNet SGR --seeds 1
$C --only PAN --seeds 0
$C --only BoT SBS OCNet SGR --seeds 2
$C --only "SGR, [RE(X); RE(X)] control"
$C --only PAN --seeds 1 2
$C --only "AlignedReID + OBC" --seeds 0
$C --only "AlignedReID, no OBC (Table 1 baseline)"
$C --only "PAN, no buffer layer (Table 3 row 5)"
$C --only "OCNet, no backbone freeze"
# (the third session added the AlignedReID controls and AMD-Net, and ran them before the remaining rows)
$C --only "PAN, FC per part (Table 2, not shared)"
$C --only "AlignedReID, [X; Occ(X)] without the OBC loss (alpha 1)"
$C --only "AlignedReID + OBC, BatchNorm before the OBC's FC (not in the paper)"
$C --only "AMD-Net" --seeds 0
$C --only "AMD-Net, no parsing labels"
$C --only "PAN, softmax over the masks (Table 4, w/)"
$C --only "AMD-Net" --seeds 1 2
$C --only "AlignedReID + OBC" --seeds 1 2
$C
