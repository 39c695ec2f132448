#!/usr/bin/env bash
# An hour of CPU on FER2013 (or FER+): the medium preset with fer2neuro's
# recipe, the best epoch chosen on a validation split held out of Training,
# PublicTest evaluated once at the end; then the chosen model is exported and
# verified spike-exact against every float backend.
#
#   bash examples/train_cpu_hour.sh [--ferplus] [--minutes M] [--samples N] [--out DIR]
#
# --samples: PublicTest faces the verification runs through every backend
# (default 16).
#
# FER2NEURO_DATA is the folder holding fer2013.csv.gz (and fer2013new.csv for
# --ferplus); default ../shared/data. The figures measured with it are in
# docs/training.md ("An hour of CPU"). Exit status: that of the first step
# that fails; 2 on bad arguments.
set -euo pipefail

MINUTES=60
SAMPLES=16
FERPLUS=0
OUT=
while (($#)); do
    case "$1" in
        --ferplus) FERPLUS=1; shift ;;
        --minutes) [[ $# -ge 2 ]] || { echo "train_cpu_hour: --minutes needs a value" >&2; exit 2; }
                   MINUTES=$2; shift 2 ;;
        --samples) [[ $# -ge 2 ]] || { echo "train_cpu_hour: --samples needs a value" >&2; exit 2; }
                   SAMPLES=$2; shift 2 ;;
        --out) [[ $# -ge 2 ]] || { echo "train_cpu_hour: --out needs a value" >&2; exit 2; }
               OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "train_cpu_hour: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
[[ $MINUTES =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "train_cpu_hour: --minutes must be a number, got '$MINUTES'" >&2; exit 2; }
[[ $SAMPLES =~ ^[1-9][0-9]*$ ]] || { echo "train_cpu_hour: --samples must be a positive integer, got '$SAMPLES'" >&2; exit 2; }

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
OUT=${OUT:-runs/$NAME-medium-${MINUTES}min}
PY=${PY:-python}
[[ -x .venv/bin/python && $PY == python ]] && PY=.venv/bin/python

set -x
"$PY" -m fer2neuro train "${ARGS[@]}" --preset medium --recipe fer2neuro --time-budget "$MINUTES" --out "$OUT"
"$PY" -m fer2neuro verify "$OUT/best.pt" "${ARGS[@]}" --backends snntorch,nir,lava,onnx --samples "$SAMPLES" \
    --report "$OUT/verify.json" --markdown "$OUT/verify.md"
