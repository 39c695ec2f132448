"""Is one trained model better than another, on the same faces? Two or more
checkpoints evaluated side by side on PublicTest (and on the validation
split, where every run carved the same one), each against the first: the
faces it gets right that the first gets wrong (+right) and the reverse
(+wrong), with the exact McNemar p-value of that pair.

Two runs' accuracies have overlapping 95 % intervals far more often than
their difference is noise: on the same 3,589 faces most answers agree, and
McNemar's test looks only at the ones that do not.

    python benchmarks/paired_models.py runs/a/best.pt runs/b/best.pt \\
        --data $FER2NEURO_DATA/fer2013.csv.gz [--ferplus FILE] [--tta flip] [--precision bf16] \\
        [--curves runs.png]

``--curves`` draws every run's validation and training accuracy per epoch
on one chart, from the ``metrics.json`` beside each checkpoint.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fer2neuro.data import load_splits
from fer2neuro.data.holdout import validation_split
from fer2neuro.model.checkpoint import load_checkpoint
from fer2neuro.training.loop import evaluate_model
from fer2neuro.training.metrics import mcnemar_exact
from fer2neuro.training.plots import plot_runs
from fer2neuro.training.tta import TTA_MODES


def split_of(ckpt) -> tuple[float, int]:
    """The (validation fraction, seed) a run carved its validation split with."""
    training = ckpt.metrics.get("config", {}).get("training", {})
    return training.get("val_split", 0.1), training.get("seed", 0)


def history(path: str, ckpt) -> list[dict]:
    """A run's epochs: its metrics.json (the whole run) where it is beside
    the checkpoint, else the checkpoint's own (up to the epoch it was saved)."""
    beside = Path(path).with_name("metrics.json")
    metrics = json.loads(beside.read_text()) if beside.is_file() else ckpt.metrics
    return metrics.get("epochs", [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="the first is the reference")
    parser.add_argument("--data", required=True)
    parser.add_argument("--ferplus", default=None)
    parser.add_argument("--tta", default="flip", choices=TTA_MODES)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--limit", type=int, default=None, help="first N faces of each split")
    parser.add_argument("--curves", default=None, help="PNG: every run's accuracy per epoch")
    args = parser.parse_args()
    if len(args.checkpoints) < 2:
        parser.error("give at least two checkpoints")

    ckpts = [load_checkpoint(path) for path in args.checkpoints]
    if args.curves:
        runs = {Path(path).parent.name or path: history(path, ckpt) for path, ckpt in zip(args.checkpoints, ckpts)}
        plot_runs(runs, args.curves, "validation (solid) and training (dashed) accuracy")
        print(f"wrote {args.curves}")
    splits = {split_of(c) for c in ckpts}
    fraction, seed = split_of(ckpts[0])
    data = load_splits(args.data, {"Training": None, "PublicTest": args.limit}, ferplus=args.ferplus, seed=seed)
    faces = {"PublicTest": data["PublicTest"]}
    if len(splits) == 1:          # the same validation faces for every run: compare there too
        _, val = validation_split(data["Training"], fraction, seed)
        faces = {"validation": val.subset(range(min(args.limit or len(val), len(val)))), **faces}
    else:
        print(f"the runs carved different validation splits {sorted(splits)}: PublicTest only")
    print(f"tta {args.tta}, {args.precision}, {torch.get_num_threads()} threads")
    print(f"{'split':<11} {'model':<44} {'accuracy':>9} {'95 % CI':>15} {'macro-F1':>8} "
          f"{'+right':>7} {'+wrong':>7} {'McNemar p':>10} {'seconds':>8}")
    for split, dataset in faces.items():
        reference = None
        for path, ckpt in zip(args.checkpoints, ckpts):
            started = time.perf_counter()
            result = evaluate_model(ckpt.build("cpu"), dataset, precision=args.precision, tta=args.tta)
            seconds = time.perf_counter() - started
            ok = result.correct()
            low, high = result.accuracy_ci95
            if reference is None:
                reference, paired = ok, ""
            else:
                b, c = int((ok & ~reference).sum()), int((~ok & reference).sum())
                paired = f"{b:>7} {c:>7} {mcnemar_exact(b, c):>10.3f}"
            print(f"{split:<11} {path[-44:]:<44} {result.accuracy * 100:>8.2f}% "
                  f"{f'{low * 100:.1f}-{high * 100:.1f} %':>15} {result.macro_f1:>8.3f} {paired:<26} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
