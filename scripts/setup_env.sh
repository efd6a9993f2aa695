#!/usr/bin/env bash
# One-command set-up of occreid's development/run environment, used by the README, the Makefile
# and .ci/run:
#   1. a virtual environment in .venv (or $OCCREID_VENV),
#   2. pinned dependencies (scripts/constraints.txt), fastreid 1.4.0 with --no-deps,
#   3. the reviewed patches in third_party_patches/ applied to fastreid / torchreid / mediapipe
#      (scripts/patch_toolbox.sh),
#   4. fastreid's Cython ranker (rank_cy / roc_cy) built,
#   5. occreid installed in editable mode.
# Idempotent: a second run with nothing changed only checks the environment (a few seconds).
# Fails loudly (exit 1, naming the file) when a patch neither applies nor is already applied.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${OCCREID_VENV:-$root/.venv}"
py="$venv/bin/python"
cons="$root/scripts/constraints.txt"
reqs="$root/scripts/requirements.txt"
stamp="$venv/.occreid-setup"

log() { echo "[setup_env] $*"; }

# Everything that decides the environment's content; a change re-runs the pip steps.
want_hash=$(cat "$cons" "$reqs" "$root/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)

if [ ! -x "$py" ]; then
  log "creating virtual environment $venv"
  python3 -m venv "$venv"
fi
export PATH="$venv/bin:$PATH"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want_hash" ]; then
  log "installing pinned dependencies (first run downloads torch with its CUDA libraries, ~2.8 GB)"
  "$py" -m pip install --disable-pip-version-check -q -c "$cons" -r "$reqs"
  log "installing fastreid 1.4.0 without its (torch 1.13) dependency pins"
  "$py" -m pip install --disable-pip-version-check -q --no-deps -c "$cons" fastreid
  # grad-cam (saliency maps) depends on opencv-python, which would install a second cv2 over
  # opencv-python-headless; its other dependencies (ttach, ...) are in requirements.txt
  log "installing grad-cam without its opencv-python dependency"
  "$py" -m pip install --disable-pip-version-check -q --no-deps -c "$cons" grad-cam
  # mediapipe 0.10.14 (human-parsing labels for AMD-Net) pins protobuf<5 and opencv-contrib-python, which
  # would downgrade tensorboard's protobuf 7 and install a second cv2; its other run-time dependencies
  # are in requirements.txt (jax and sounddevice are not needed by mediapipe.solutions); the protobuf 7
  # incompatibilities are patched by third_party_patches/mediapipe-0001-protobuf7.patch below
  log "installing mediapipe without its protobuf / opencv-contrib dependencies"
  "$py" -m pip install --disable-pip-version-check -q --no-deps -c "$cons" mediapipe
  # timm (AMD-Net's HRNet-W32 backbone) without huggingface_hub / safetensors: no weights are downloaded
  log "installing timm without its hub dependencies"
  "$py" -m pip install --disable-pip-version-check -q --no-deps -c "$cons" timm
  log "installing occreid (editable)"
  "$py" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e "$root"
else
  log "pinned dependencies already installed"
fi

site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")

# Apply each patch once (already applied -> skipped; fails naming the file): the same command users run on
# their own install or checkout.
bash "$root/scripts/patch_toolbox.sh" "$site" \
  || { echo "[setup_env] ERROR: the patches do not apply to $site (is the pinned fastreid/torchreid installed?)" >&2; exit 1; }

ranker="$site/fastreid/evaluation/rank_cylib"
if ! ls "$ranker"/rank_cy*.so >/dev/null 2>&1 || ! ls "$ranker"/roc_cy*.so >/dev/null 2>&1; then
  log "building fastreid's Cython ranker"
  (cd "$ranker" && "$py" setup.py build_ext --inplace >/dev/null 2>&1 && rm -rf build)
fi

"$py" -W ignore -c "import fastreid.data, fastreid.engine, torchreid, torchvision, faiss, occreid" \
  || { echo "[setup_env] ERROR: the environment does not import; remove $venv and re-run" >&2; exit 1; }
# the patched mediapipe builds BlazePose + its segmentation offline (the models bundled in the wheel);
# its C++ logging is shown only when that fails
mp_log=$("$py" -W ignore -c "from occreid.data.parsing import build_parsers; build_parsers()" 2>&1) \
  || { echo "$mp_log" >&2; echo "[setup_env] ERROR: mediapipe's BlazePose does not build (is mediapipe-0001-protobuf7.patch applied?)" >&2; exit 1; }
echo "$want_hash" > "$stamp"
log "ready: $venv (python $("$py" -c 'import sys; print(sys.version.split()[0])'), torch $("$py" -c 'import torch; print(torch.__version__)'))"
