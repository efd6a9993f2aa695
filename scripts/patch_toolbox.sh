#!/usr/bin/env bash
# Apply occreid's reviewed patches (third_party_patches/) to the toolboxes found in PATH, once.
#
#   bash scripts/patch_toolbox.sh PATH [PATH ...]
#
# PATH: a site-packages folder (PyPI fastreid 1.4.0, torchreid 0.2.5, mediapipe 0.10.14), or a checkout of
# FastReID's GitHub tree (JDAI-CV/fast-reid, the folder holding fastreid/ and tools/) or of TorchReID's
# (KaiyangZhou/deep-person-reid, the folder holding torchreid/). For each toolbox whose package folder is in
# PATH, each patch slot (third_party_patches/<toolbox>-NNNN-*.patch) has one file per target: the one in
# third_party_patches/ (PyPI) and, where the GitHub tree differs, third_party_patches/github/ (same name).
# Per slot: a variant that is already applied (its reverse applies exactly) -> skipped; else the variant that
# applies exactly (no fuzz, no offset beyond patch's own search) -> applied; else an error naming the patch and
# the files whose hunks fail, and exit 1. Toolboxes whose package folder is not in PATH are skipped.
# The commits the GitHub variants were checked against are in third_party_patches/README.md.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
patches="$root/third_party_patches"
log() { echo "[patch_toolbox] $*"; }

if [ $# -eq 0 ]; then
  echo "usage: $0 PATH [PATH ...]  (a site-packages folder or a FastReID / TorchReID checkout)" >&2
  exit 2
fi

status=0
for target in "$@"; do
  if [ ! -d "$target" ]; then
    echo "[patch_toolbox] ERROR: $target is not a folder" >&2
    exit 2
  fi
  target="$(cd "$target" && pwd)"
  found=0
  for toolbox in fastreid torchreid mediapipe; do
    if [ ! -f "$target/$toolbox/__init__.py" ]; then
      continue
    fi
    found=1
    applied=0; skipped=0
    for base in "$patches/$toolbox"-*.patch; do
      name=$(basename "$base")
      variants=("$base")
      [ -f "$patches/github/$name" ] && variants+=("$patches/github/$name")
      done_slot=0
      for p in "${variants[@]}"; do
        if patch -p1 -d "$target" --dry-run -R -s -f --fuzz=0 < "$p" >/dev/null 2>&1; then
          skipped=$((skipped + 1)); done_slot=1; break
        fi
      done
      [ $done_slot -eq 1 ] && continue
      for p in "${variants[@]}"; do
        if patch -p1 -d "$target" --dry-run -s -f --fuzz=0 < "$p" >/dev/null 2>&1; then
          patch -p1 -d "$target" -s -f --fuzz=0 --no-backup-if-mismatch < "$p"
          log "applied ${p#"$root"/} to $target"
          applied=$((applied + 1)); done_slot=1; break
        fi
      done
      if [ $done_slot -eq 0 ]; then
        echo "[patch_toolbox] ERROR: $name applies to $target in none of its variants (${variants[*]#"$root"/})." >&2
        for p in "${variants[@]}"; do
          echo "[patch_toolbox]   ${p#"$root"/}:" >&2
          # the files whose hunks fail, as patch reports them
          patch -p1 -d "$target" --dry-run -f --fuzz=0 < "$p" 2>&1 | grep -B1 -E "FAILED|can't find file|No file to patch|Reversed" \
            | sed 's/^/[patch_toolbox]     /' >&2 || true
        done
        status=1
      fi
    done
    log "$toolbox in $target: $applied applied, $skipped already applied"
  done
  if [ $found -eq 0 ]; then
    echo "[patch_toolbox] ERROR: no fastreid/, torchreid/ or mediapipe/ package in $target" >&2
    status=2
  fi
done
exit $status
