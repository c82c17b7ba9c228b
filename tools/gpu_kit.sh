#!/usr/bin/env bash
# Developer tool: pack what a GPU machine of the `device` tool needs into parts that fit its transfer limit.
#
# Each `run` call carries the working tree (~34 MB with the bundled weights) plus at most ~64 MiB in all, so the
# files travel as parts of $PART_MB (default 28) MB, one part per call, joined there:
#   kit "train": the prepared data (.devdata/prepared) + the wheels of .whl (omegaconf, PyYAML, kornia)
#   kit "app":   dlib-bin, the 68-point shape predictor (xz), PyAV, c2pa-python + cryptography, a 10 s driver clip
#                and a portrait (for benchmarks/app.py on the GPU machine's own CPU, no GPU-side shortcuts)
#   kit "speech": the speech features (python -m puppeteer.audio.train --export-features)
#
#   tools/gpu_kit.sh train|app|speech      -> .devdata/kit/<name>/part-NN (+ printed carry/join commands)
#
# On the machine: `cat .devdata/kit/<name>/part-* >> /root/<name>.tar` per call, then
# `tar -xf /root/<name>.tar -C /root/<name>` once all parts are there (see NOTES.md for the call sequence).
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: tools/gpu_kit.sh train|app|speech}
PART_MB=${PART_MB:-28}
PY=${PY:-.venv/bin/python}
# the versions requirements.lock pins (the same code as here), else the newest
pinned() { for p in "$@"; do grep -iE "^$p==" requirements.lock || echo "$p"; done; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
case "$name" in
  train)
    cp -r .devdata/prepared "$stage/prepared"
    cp -r .whl "$stage/wheels"
    ;;
  app)
    mkdir -p "$stage/wheels" "$stage/face_recognition_models/models" "$stage/media"
    $PY -m pip download -q --no-deps --python-version 3.12 --only-binary=:all: \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$stage/wheels" $(pinned av dlib-bin c2pa-python cryptography cffi pycparser toml) 2>/dev/null
    cp .whl/*.whl "$stage/wheels/"
    models=$($PY -c "import importlib.util,os;print(os.path.dirname(importlib.util.find_spec('face_recognition_models').origin)+'/models')")
    xz -T2 -6 -c "$models/shape_predictor_68_face_landmarks.dat" > "$stage/face_recognition_models/models/shape_predictor_68_face_landmarks.dat.xz"
    : > "$stage/face_recognition_models/__init__.py"
    $PY - "$stage/media" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from app import DATA, cut, pick_clip  # the benchmark's own choice of driver and portrait
out = Path(sys.argv[1])
clip = pick_clip(10.0)
cut(clip, 10.0, out / "driver.mp4")
(out / "portrait.jpg").write_bytes((DATA / "portraits" / "lp_s5.jpg").read_bytes())
print(f"driver: first 10 s of {clip}")
EOF
    ;;
  speech)
    cp .devdata/audio_features.npz "$stage/"
    ;;
  *) echo "unknown kit $name" >&2; exit 2 ;;
esac
dest=.devdata/kit/$name
rm -rf "$dest" && mkdir -p "$dest"
tar -cf - -C "$stage" . | split -b "${PART_MB}m" -d -a 2 - "$dest/part-"
ls -la "$dest"
echo "carry one part per call, e.g. carry [\"$dest/part-00\"]: mkdir -p /root/$name && cat $dest/part-* >> /root/$name.tar"
