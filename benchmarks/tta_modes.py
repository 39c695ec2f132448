"""What each test-time augmentation (``--tta``) is worth for one trained
model: accuracy on the validation split its run chose on and on the test
split, with the cost in forward passes and seconds, every mode side by side
on the same faces.

The paired columns count the faces a mode gets right that ``none`` gets
wrong and the reverse (the two counts of McNemar's test): on the same model
and the same faces they say more than the accuracies' overlapping intervals.

    python benchmarks/tta_modes.py runs/fer2013-deep-60min/best.pt \\
        --data $FER2NEURO_DATA/fer2013.csv.gz [--ferplus FILE] [--precision bf16]

The validation split is the run's own (``--val-split`` and ``--seed`` read
from the checkpoint's metrics), so a mode can be chosen honestly, on
validation, and PublicTest only confirms it.
"""
from __future__ import annotations

import argparse
import time

import torch

from fer2neuro.data import load_splits
from fer2neuro.data.holdout import validation_split
from fer2neuro.model.checkpoint import load_checkpoint
from fer2neuro.training.loop import evaluate_model
from fer2neuro.training.tta import TTA_MODES, views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True)
    parser.add_argument("--ferplus", default=None)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--limit", type=int, default=None, help="first N faces of each split")
    args = parser.parse_args()

    ckpt = load_checkpoint(args.checkpoint)
    training = ckpt.metrics.get("config", {}).get("training", {})
    fraction, seed = training.get("val_split", 0.1), training.get("seed", 0)
    splits = load_splits(args.data, {"Training": None, "PublicTest": args.limit}, ferplus=args.ferplus, seed=seed)
    _, val = validation_split(splits["Training"], fraction, seed)
    if args.limit:
        val = val.subset(range(min(args.limit, len(val))))
    model = ckpt.build("cpu")
    print(f"{args.checkpoint}: {ckpt.config.preset}, T={ckpt.config.timesteps}, {args.precision}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'split':<11} {'tta':<8} {'views':>5} {'accuracy':>9} {'macro-F1':>8} {'+right':>7} {'+wrong':>7} "
          f"{'seconds':>8}")
    for name, data in (("validation", val), ("PublicTest", splits["PublicTest"])):
        base = None
        for mode in TTA_MODES:
            started = time.perf_counter()
            result = evaluate_model(model, data, precision=args.precision, tta=mode)
            seconds = time.perf_counter() - started
            ok = result.correct()
            if base is None:
                base = ok
            print(f"{name:<11} {mode:<8} {len(views(torch.zeros(1, 1, 2, 2), mode)):>5} "
                  f"{result.accuracy * 100:>8.2f}% {result.macro_f1:>8.3f} {int((ok & ~base).sum()):>7} "
                  f"{int((~ok & base).sum()):>7} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
