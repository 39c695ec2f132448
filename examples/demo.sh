#!/usr/bin/env bash
# `make demo`: the main job on the built-in synthetic faces, every step timed.
#   train -> evaluate -> figures -> export (NIR, Lava, ONNX) -> verify every
#   backend -> fine-tune for Loihi (QAT) -> verify again -> predict a photo.
# Usage: RUN=demo-run BIN=.venv/bin bash examples/demo.sh
set -euo pipefail
RUN=${RUN:-demo-run}
BIN=${BIN:-.venv/bin}
F=$BIN/fer2neuro
TIMES=()
START=${EPOCHREALTIME/./}               # microseconds (bash >= 5)

step() {                       # step "what it shows" command...
    local name=$1; shift
    echo "== $name" >&2
    local t0=${EPOCHREALTIME/./}
    "$@"
    local took=$(( (${EPOCHREALTIME/./} - t0) / 100000 ))          # tenths of a second
    TIMES+=("$(printf '%5d.%d s  %s' $((took / 10)) $((took % 10)) "$name")")
    printf '== %s: %d.%d s\n' "$name" $((took / 10)) $((took % 10)) >&2
}

rm -rf "$RUN"
step "network summary" $F summary --preset small
step "train (10 epochs)" $F train --data synthetic --preset small --epochs 10 --out "$RUN"
step "evaluate on PublicTest" $F evaluate "$RUN/best.pt" --data synthetic --split PublicTest
step "the paper's figures" $F visualize "$RUN/best.pt" --out "$RUN/figures"
step "efficiency report" $F report "$RUN/best.pt" --samples 64
step "export NIR, Lava, ONNX" bash -c "$F export '$RUN/best.pt' --target nir --out '$RUN/model.nir' && \
    $F export '$RUN/best.pt' --target lava --out '$RUN/lava' && \
    $F export '$RUN/best.pt' --target onnx --out '$RUN/model.onnx'"
step "Loihi 2 resources" $F report "$RUN/best.pt" --target loihi
step "verify nir, onnx, loihi (700 faces)" $F verify "$RUN/best.pt" --backends nir,onnx,loihi \
    --nir "$RUN/model.nir" --onnx "$RUN/model.onnx" --lava "$RUN/lava" --samples 700 --batch-size 64 \
    --report "$RUN/verify.json" --plot "$RUN/verify.png"
step "verify every backend, Lava too (4 faces)" $F verify "$RUN/best.pt" --backends all --nir "$RUN/model.nir" \
    --lava "$RUN/lava" --onnx "$RUN/model.onnx" --samples 4 --report "$RUN/verify-all.json" \
    --plot "$RUN/verify-all.png"
step "fine-tune for Loihi (QAT)" $F finetune "$RUN/best.pt" --qat loihi --epochs 2 --limit 2000 --eval-limit 700 \
    --out "$RUN/qat"
step "verify the fine-tuned model on loihi (700 faces)" $F verify "$RUN/qat/best.pt" --backends loihi \
    --samples 700 --batch-size 64 --report "$RUN/verify-qat.json"
step "predict a photo on loihi" bash -c "$BIN/python examples/write_scene.py '$RUN/scene.png' && \
    $F predict '$RUN/scene.png' --model '$RUN/qat/best.pt' --target loihi --margin 0.16 --annotate '$RUN/annotated'"

echo
echo "demo done in $(( (${EPOCHREALTIME/./} - START) / 1000000 )) s; each step:"
printf '  %s\n' "${TIMES[@]}"
echo "everything is in $RUN/ (checkpoints, figures, model.nir, lava/, model.onnx, verify*.json, annotated/)"
