#!/usr/bin/env bash
# An hour of CPU on FER2013 (or FER+): the deep preset with fer2neuro's
# recipe in bf16, flip test-time averaging, the best epoch chosen on a
# validation split held out of Training, PublicTest evaluated once at the end.
# Then the chosen model is verified spike-exact against every float backend,
# fine-tuned for Loihi's fixed point (QAT, one epoch) and the fine-tuned model
# verified bit-exact on the fixed-point backends; its metrics.json gives the
# deployed (loihi) accuracy beside the float one.
#
#   bash examples/train_cpu_hour.sh [--ferplus] [--minutes M] [--samples N] [--qat-limit N] [--out DIR]
#
# --samples: PublicTest faces the verifications run through every backend
# (default 16). --qat-limit: fine-tune on the first N Training faces and
# evaluate on the first N PublicTest ones (default: fine-tune on 4,000, about
# 5 minutes on one core, evaluate on all; a small N is a quick check).
#
# FER2NEURO_DATA is the folder holding fer2013.csv.gz (and fer2013new.csv for
# --ferplus); default ../shared/data. The figures measured with it are in
# docs/training.md ("An hour of CPU"). Exit status: that of the first step
# that fails; 2 on bad arguments.
set -euo pipefail

MINUTES=60
SAMPLES=16
QAT_LIMIT=
FERPLUS=0
OUT=
while (($#)); do
    case "$1" in
        --ferplus) FERPLUS=1; shift ;;
        --minutes) [[ $# -ge 2 ]] || { echo "train_cpu_hour: --minutes needs a value" >&2; exit 2; }
                   MINUTES=$2; shift 2 ;;
        --samples) [[ $# -ge 2 ]] || { echo "train_cpu_hour: --samples needs a value" >&2; exit 2; }
                   SAMPLES=$2; shift 2 ;;
        --qat-limit) [[ $# -ge 2 ]] || { echo "train_cpu_hour: --qat-limit needs a value" >&2; exit 2; }
                     QAT_LIMIT=$2; shift 2 ;;
        --out) [[ $# -ge 2 ]] || { echo "train_cpu_hour: --out needs a value" >&2; exit 2; }
               OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "train_cpu_hour: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
[[ $MINUTES =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "train_cpu_hour: --minutes must be a number, got '$MINUTES'" >&2; exit 2; }
[[ $SAMPLES =~ ^[1-9][0-9]*$ ]] || { echo "train_cpu_hour: --samples must be a positive integer, got '$SAMPLES'" >&2; exit 2; }
[[ -z $QAT_LIMIT || $QAT_LIMIT =~ ^[1-9][0-9]*$ ]] || { echo "train_cpu_hour: --qat-limit must be a positive integer, got '$QAT_LIMIT'" >&2; exit 2; }
QAT_ARGS=(--limit 4000)
[[ -z $QAT_LIMIT ]] || QAT_ARGS=(--limit "$QAT_LIMIT" --eval-limit "$QAT_LIMIT")

DATA=${FER2NEURO_DATA:-../shared/data}
CSV=$DATA/fer2013.csv.gz
[[ -f $CSV ]] || { echo "train_cpu_hour: no $CSV (set FER2NEURO_DATA)" >&2; exit 2; }
ARGS=(--data "$CSV")
NAME=fer2013
if ((FERPLUS)); then
    [[ -f $DATA/fer2013new.csv ]] || { echo "train_cpu_hour: no $DATA/fer2013new.csv" >&2; exit 2; }
    ARGS+=(--ferplus "$DATA/fer2013new.csv")
    NAME=ferplus
fi
OUT=${OUT:-runs/$NAME-deep-${MINUTES}min}
PY=${PY:-python}
[[ -x .venv/bin/python && $PY == python ]] && PY=.venv/bin/python

set -x
"$PY" -m fer2neuro train "${ARGS[@]}" --preset deep --recipe fer2neuro --precision bf16 --tta flip \
    --time-budget "$MINUTES" --out "$OUT"
"$PY" -m fer2neuro verify "$OUT/best.pt" "${ARGS[@]}" --backends nir,lava,onnx --samples "$SAMPLES" \
    --report "$OUT/verify.json" --markdown "$OUT/verify.md"
"$PY" -m fer2neuro finetune "$OUT/best.pt" "${ARGS[@]}" --qat loihi --epochs 1 --loss current-ce \
    "${QAT_ARGS[@]}" --out "$OUT/qat"
"$PY" -m fer2neuro verify "$OUT/qat/best.pt" "${ARGS[@]}" --backends all --samples "$SAMPLES" \
    --report "$OUT/qat/verify.json" --markdown "$OUT/qat/verify.md"
