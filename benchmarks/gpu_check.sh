#!/usr/bin/env bash
# GPU check of fer2neuro's training path on one CUDA GPU, in about 9 minutes
# on an H200:
#   1. nvidia-smi summary, torch / CUDA / cuDNN versions;
#   2. pytest -m cuda tests/test_cuda.py (CUDA == CPU spikes and gradients,
#      a training run on cuda, bf16 autocast, the batch loader);
#   3. training throughput, fused engine, paper preset, batch 16 and 64,
#      fp32 and bf16 (and benchmarks/train_throughput.py when it has --device);
#   4. a paper-preset FER2013 run in bf16 sized to TRAIN_SECONDS, then
#      `fer2neuro evaluate best.pt --split PublicTest --json`;
#   5. the paper's Table 6 on FER2013 (examples/reproduce_table6.py: T=4, T=8,
#      T=8 + Poisson, T=8 + Poisson + STDP, the CNN; paper preset, the paper's
#      recipe and protocol), each variant for TABLE6_SECONDS in bf16; the
#      table lands in $OUT/table6/table6.md;
#   6. with more than one GPU: a one-node DDP smoke test (fer2neuro train
#      --nproc <GPUs> --sync-bn, nccl), which must report every rank;
#   7. the `deep` preset's 100-epoch FER2013 run with the documented recipe
#      (fer2neuro, flip TTA) in bf16, capped at DEEP_SECONDS; the epochs it
#      held, its curve and its PublicTest accuracy land in $OUT/deep/.
#
# How to run it, on a CUDA machine, from anywhere (it works in the repo root):
#   make setup                     # once; .venv's torch must be a CUDA build: on a
#                                  # CUDA machine install it into .venv first (README)
#   bash benchmarks/gpu_check.sh [--epochs N] [--out DIR]
# It installs nothing and needs no network. Python: $PY, else .venv/bin/python,
# else python3 (with the repository on PYTHONPATH).
#
# Environment (all optional):
#   FER2NEURO_DATA  folder holding fer2013.csv.gz     (default ../shared/data; step 4
#                   is skipped, and said so, without it)
#   OUT             where everything is written        (default gpu-check-out)
#   EPOCHS          epochs of step 4 (default: as many as fit TRAIN_SECONDS at the
#                   bf16 throughput measured in step 3, 1 to 30)
#   TRAIN_SECONDS   step 4's time budget in seconds    (default 180)
#   TABLE6_SECONDS  step 5's time budget per variant   (default 45; 0 skips step 5)
#   BATCH           step 4's batch size                (default 16, the paper's)
#   DEEP_EPOCHS     step 7's epochs                    (default 100; 0 skips step 7)
#   DEEP_SECONDS    step 7's time cap in seconds       (default 3600: a 100-epoch
#                   run takes longer than one device call, so say how many held)
#   DEVICE, PRESET, STEPS, LIMIT: cuda, paper, 20 and none; a dry run of the
#   script's logic on a CPU box: DEVICE=cpu PRESET=small STEPS=2 LIMIT=64 EPOCHS=1
#
# Exit status: 0 when every step ran and passed, 1 otherwise (the steps after
# a failed one still run, so one call reports everything); 2 on bad arguments.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

while (($#)); do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --epochs) [[ $# -ge 2 ]] || { echo "gpu_check: --epochs needs a value" >&2; exit 2; }
                  EPOCHS=$2; shift 2 ;;
        --epochs=*) EPOCHS=${1#*=}; shift ;;
        --out) [[ $# -ge 2 ]] || { echo "gpu_check: --out needs a value" >&2; exit 2; }
               OUT=$2; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        *) echo "gpu_check: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

positive_int() {  # name value
    [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "gpu_check: $1 must be a positive integer, got '$2'" >&2; exit 2; }
}
[[ -z ${EPOCHS:-} ]] || positive_int EPOCHS "$EPOCHS"
TRAIN_SECONDS=${TRAIN_SECONDS:-180}; positive_int TRAIN_SECONDS "$TRAIN_SECONDS"
TABLE6_SECONDS=${TABLE6_SECONDS:-45}
[[ $TABLE6_SECONDS == 0 ]] || positive_int TABLE6_SECONDS "$TABLE6_SECONDS"
BATCH=${BATCH:-16};                   positive_int BATCH "$BATCH"
DEEP_EPOCHS=${DEEP_EPOCHS:-100}
[[ $DEEP_EPOCHS == 0 ]] || positive_int DEEP_EPOCHS "$DEEP_EPOCHS"
DEEP_SECONDS=${DEEP_SECONDS:-3600};   positive_int DEEP_SECONDS "$DEEP_SECONDS"
STEPS=${STEPS:-20};                   positive_int STEPS "$STEPS"
[[ -z ${LIMIT:-} ]] || positive_int LIMIT "$LIMIT"
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-paper}
case "$PRESET" in paper|medium|small) ;; *) echo "gpu_check: PRESET must be paper, medium or small, got '$PRESET'" >&2; exit 2 ;; esac

# OUT and FER2NEURO_DATA given relative are relative to where the script was
# started; the default data folder is relative to the repository, as in the Makefile.
CALLER=$PWD
absolute() { if [[ $1 == /* ]]; then echo "$1"; else echo "$CALLER/$1"; fi; }
[[ -z ${OUT:-} ]] || OUT=$(absolute "$OUT")
[[ -z ${FER2NEURO_DATA:-} ]] || FER2NEURO_DATA=$(absolute "$FER2NEURO_DATA")
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
if [[ -z ${PY:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
FER2NEURO_DATA=${FER2NEURO_DATA:-../shared/data}
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
LOG=$OUT/gpu-check.log
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1

FAILED=()
T_START=$SECONDS
step() { echo; echo "=== [$((SECONDS - T_START)) s] $*"; }
fer2neuro() { "$PY" -m fer2neuro "$@"; }

step "1/7 machine ($DEVICE, $PY)"
if [[ $DEVICE == cuda* ]] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu,clocks.sm \
               --format=csv || true
fi
"$PY" - "$DEVICE" <<'EOF'
import sys, torch
device = sys.argv[1]
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}")
if device.startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit(f"gpu_check: this torch ({torch.__version__}) sees no CUDA GPU: install a CUDA build "
                 "into .venv, or point PY at a python that has one")
    props = torch.cuda.get_device_properties(0)
    print(f"{torch.cuda.device_count()} GPU(s); 0: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
          f"sm_{props.major}{props.minor}, {props.multi_processor_count} SMs, bf16 {torch.cuda.is_bf16_supported()}")
EOF

step "2/7 CUDA tests"
if [[ $DEVICE == cuda* ]]; then
    timeout 180 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests/test_cuda.py || FAILED+=("cuda tests")
else
    echo "skipped on $DEVICE"
fi

step "3/7 training throughput ($PRESET preset, T=4, direct encoding, fused engine)"
timeout 120 "$PY" - "$DEVICE" "$PRESET" "$STEPS" "$OUT/throughput.json" <<'EOF' || FAILED+=("throughput")
import json, sys, time
import torch
from fer2neuro.model.config import preset_config
from fer2neuro.model.network import build_model
from fer2neuro.training.device import autocast, setup_device
from fer2neuro.training.losses import output_loss
from fer2neuro.training.optim import build_optimizer, implementation

device, preset, steps, out = torch.device(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
setup_device(device)
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
rows = []
for batch in (16, 64):
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model(preset_config(preset, timesteps=4), engine="fused").to(device).train()
        opt = build_optimizer(model.parameters(), 1e-3, device)
        x = torch.rand(batch, 1, 48, 48, device=device)
        y = torch.randint(0, 7, (batch,), device=device)

        def step():
            with autocast(device, precision):
                loss = output_loss(model(x), y, 0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(max(3, steps // 4)):       # warm-up: cuDNN autotuning, allocator
            step()
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        seconds = time.perf_counter() - t0
        rows.append({"preset": preset, "engine": "fused", "batch": batch, "precision": precision,
                     "samples_per_s": batch * steps / seconds, "ms_per_step": 1e3 * seconds / steps,
                     "optimizer": implementation(opt)})
        print(f"throughput {preset} fused batch={batch:3d} {precision}: {rows[-1]['samples_per_s']:8.1f} samples/s "
              f"({rows[-1]['ms_per_step']:.1f} ms/step, {implementation(opt)} Adam)", flush=True)
with open(out, "w") as f:
    json.dump({"device": str(device), "torch": torch.__version__, "rows": rows}, f, indent=2)
EOF
if "$PY" benchmarks/train_throughput.py --help 2>/dev/null | grep -q -- '--device'; then
    echo "benchmarks/train_throughput.py --device $DEVICE:"
    timeout 90 "$PY" benchmarks/train_throughput.py --device "$DEVICE" || FAILED+=("train_throughput.py")
else
    echo "(benchmarks/train_throughput.py has no --device option: the measurement above stands alone)"
fi

step "4/7 FER2013 $PRESET preset, bf16, about $TRAIN_SECONDS s of training"
CSV=$FER2NEURO_DATA/fer2013.csv.gz
RUN=$OUT/fer2013-$PRESET-bf16
if [[ ! -f $CSV ]]; then
    echo "SKIPPED: no $CSV (set FER2NEURO_DATA to the folder holding fer2013.csv.gz)"
    FAILED+=("FER2013 run (no data)")
else
    if [[ -z ${EPOCHS:-} ]]; then
        # epochs that fit the budget at the measured bf16 rate (80 %: validation takes its share)
        EPOCHS=$("$PY" - "$OUT/throughput.json" "$BATCH" "$TRAIN_SECONDS" "${LIMIT:-28709}" <<'EOF' || echo 3
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
batch, budget, samples = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
bf16 = [r for r in rows if r["precision"] == "bf16"]
rate = min(bf16, key=lambda r: abs(r["batch"] - batch))["samples_per_s"]
print(max(1, min(30, int(0.8 * budget * rate / samples))))
EOF
)
    fi
    ARGS=(--data "$CSV" --preset "$PRESET" --device "$DEVICE" --precision bf16 --batch-size "$BATCH"
          --epochs "$EPOCHS" --no-progress --out "$RUN")
    [[ -z ${LIMIT:-} ]] || ARGS+=(--limit "$LIMIT" --val-limit "$LIMIT")
    if "$PY" -m fer2neuro train --help | grep -q -- '--time-budget'; then
        # --time-budget takes minutes
        ARGS+=(--time-budget "$("$PY" -c "print($TRAIN_SECONDS / 60)")")
    fi
    echo "fer2neuro train ${ARGS[*]}"
    rm -rf "$RUN"                                   # this script's own previous run
    # hard stop well after the budget; best.pt is written atomically after every better epoch
    timeout $((TRAIN_SECONDS + 120)) "$PY" -m fer2neuro train "${ARGS[@]}" || FAILED+=("FER2013 training")
    if [[ -f $RUN/best.pt ]]; then
        cp "$RUN/metrics.json" "$OUT/metrics.json" 2>/dev/null || true
        "$PY" - "$RUN/metrics.json" <<'EOF' || true
import json, sys
m = json.load(open(sys.argv[1]))
for e in m["epochs"]:
    print(f"epoch {e['epoch']}: train loss {e['train_loss']:.4f}, train acc {e['train_accuracy']:.4f}, "
          f"val acc {e['val_accuracy']:.4f}, {e['train_samples_per_s']:.0f} samples/s, {e['seconds']:.1f} s")
EOF
        EVAL=(evaluate "$RUN/best.pt" --data "$CSV" --split PublicTest --device "$DEVICE" --json)
        [[ -z ${LIMIT:-} ]] || EVAL+=(--limit "$LIMIT")
        if "$PY" -m fer2neuro "${EVAL[@]}" >"$OUT/evaluate.json"; then
            "$PY" - "$OUT/evaluate.json" "$RUN/best.pt" <<'EOF' || FAILED+=("evaluate output")
import json, sys
r = json.load(open(sys.argv[1]))
print(f"PublicTest accuracy {100 * r['accuracy']:.2f} % on {r['n']} faces ({sys.argv[2]})")
EOF
        else
            FAILED+=("evaluate")
        fi
    else
        echo "no $RUN/best.pt: training wrote no checkpoint"
    fi
fi

step "5/7 Table 6 on FER2013 (paper recipe and protocol, $PRESET preset, bf16, $TABLE6_SECONDS s per variant)"
if [[ $TABLE6_SECONDS == 0 ]]; then
    echo "skipped (TABLE6_SECONDS=0)"
elif [[ ! -f $CSV ]]; then
    echo "SKIPPED: no $CSV"
else
    T6=(examples/reproduce_table6.py --data "$CSV" --device "$DEVICE" --precision bf16 --out "$OUT/table6"
        --time-budget "$("$PY" -c "print($TABLE6_SECONDS / 60)")")
    [[ $PRESET == paper ]] || T6+=(--quick)
    rm -rf "$OUT/table6"
    echo "$PY ${T6[*]}"
    # five variants, each stopped by its budget; evaluation and STDP phases come on top
    timeout $((5 * TABLE6_SECONDS + 300)) "$PY" "${T6[@]}" || FAILED+=("Table 6")
fi

step "6/7 DDP smoke test: one node, every GPU, torch's launcher (skipped with fewer than 2 GPUs)"
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [[ $DEVICE != cuda* || $NGPU -lt 2 ]]; then
    echo "skipped: $NGPU CUDA device(s)"
else
    rm -rf "$OUT/ddp"
    DDP=(-m fer2neuro train --data synthetic --preset "$PRESET" --epochs 1 --limit 2048 --batch-size "$BATCH"
         --device cuda --precision bf16 --sync-bn --no-progress --nproc "$NGPU" --out "$OUT/ddp")
    echo "$PY ${DDP[*]}"
    if timeout 600 "$PY" "${DDP[@]}" && "$PY" -c "
import json, sys
m = json.load(open(sys.argv[1]))
p = m['parallel']
print(f\"{p['ranks']} ranks on {p['backend']}, batch {p['batch_per_rank']} x {p['ranks']} = {p['effective_batch']}, \"
      f\"{m['epochs'][0]['train_samples_per_s']:.0f} samples/s\")
assert p['ranks'] == int(sys.argv[2]) and p['backend'] == 'nccl'
" "$OUT/ddp/metrics.json" "$NGPU"; then :; else FAILED+=("DDP smoke test"); fi
fi

step "7/7 FER2013, deep preset, documented recipe, $DEEP_EPOCHS epochs (at most $DEEP_SECONDS s), bf16"
if [[ $DEEP_EPOCHS == 0 ]]; then
    echo "skipped (DEEP_EPOCHS=0)"
elif [[ ! -f $CSV ]]; then
    echo "SKIPPED: no $CSV"
else
    DEEP=(--data "$CSV" --preset deep --recipe fer2neuro --tta flip --epochs "$DEEP_EPOCHS" --device "$DEVICE"
          --precision bf16 --no-progress --out "$OUT/deep"
          --time-budget "$("$PY" -c "print($DEEP_SECONDS / 60)")")
    [[ -z ${LIMIT:-} ]] || DEEP+=(--limit "$LIMIT" --val-limit "$LIMIT")
    rm -rf "$OUT/deep"
    echo "fer2neuro train ${DEEP[*]}"
    if timeout $((DEEP_SECONDS + 300)) "$PY" -m fer2neuro train "${DEEP[@]}" && "$PY" - "$OUT/deep/metrics.json" <<'EOF'; then :; else FAILED+=("deep preset run"); fi
import json, sys
m = json.load(open(sys.argv[1]))
epochs = m["epochs"]
t = m["test"]
print(f"deep preset: {len(epochs)} epochs held, best validation {100 * m['best_accuracy']:.2f} % at epoch "
      f"{m['best_epoch']}, PublicTest {100 * t['accuracy']:.2f} % with {t.get('tta', 'none')} TTA"
      + (f", {100 * t['without_tta']['accuracy']:.2f} % without" if "without_tta" in t else "")
      + f", {epochs[-1]['train_samples_per_s']:.0f} samples/s")
EOF
fi

step "done in $((SECONDS - T_START)) s; outputs in $OUT/"
if ((${#FAILED[@]})); then
    echo "FAILED: ${FAILED[*]}"
    exit 1
fi
echo "all steps passed"
