"""Loihi fixed point: Lava's bit-accurate CPU simulation against fer2neuro's
batched ``loihi`` target, side by side on the same export and samples.

Lava runs one sample per network run (construction, compilation and T +
depth steps each time); ``loihi`` runs the batch at once. Both run the same
``network.net``; every spike of every layer of the Lava samples is compared.

    python benchmarks/loihi_vs_lava.py [--checkpoint demo-run/best.pt] [--lava-samples 8] [--batch 64]

The last line is ``speedup_vs_lava=<ratio> bit_exact=<true|false>``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fer2neuro.data import load_split
from fer2neuro.exporters.nir_export import model_to_nir
from fer2neuro.lowering.lava_folder import write_artifact
from fer2neuro.model.checkpoint import load_model
from fer2neuro.targets import get_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="demo-run/best.pt",
                        help="a trained checkpoint (make demo writes demo-run/best.pt)")
    parser.add_argument("--lava-samples", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not Path(args.checkpoint).is_file():
        sys.exit(f"{args.checkpoint}: no such checkpoint; run 'make demo' first or pass --checkpoint")
    model, ckpt = load_model(args.checkpoint, "cpu")
    data = load_split("synthetic", "PublicTest", limit=args.batch)
    frames = data.images.astype(np.float64) / 255.0
    inputs = np.repeat(frames[:, None, None], ckpt.config.timesteps, axis=1)       # (B, T, 1, 48, 48)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "lava"
        write_artifact(model_to_nir(model), folder, direct=True)
        print(f"{args.checkpoint}: {ckpt.config.preset} preset, T={ckpt.config.timesteps}, direct encoding; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

        lava = get_target("lava-fixed")
        lava.run(str(folder), inputs[:1])                                              # warm-up (imports)
        start = time.perf_counter()
        theirs = lava.run(str(folder), inputs[:args.lava_samples])
        lava_rate = args.lava_samples / (time.perf_counter() - start)
        print(f"lava fixed_pt       {lava_rate:9.2f} samples/s  ({args.lava_samples} samples, one run each)",
              flush=True)

        loihi = get_target("loihi")
        loihi.run(str(folder), inputs, batch_size=args.batch)                           # warm-up
        start = time.perf_counter()
        for _ in range(args.repeats):
            ours = loihi.run(str(folder), inputs, batch_size=args.batch)
        loihi_rate = args.repeats * len(inputs) / (time.perf_counter() - start)
        print(f"loihi (batched)     {loihi_rate:9.2f} samples/s  (batch {args.batch}, mean of {args.repeats})",
              flush=True)

    layers = [name for name in theirs.spiking]
    exact = all(np.array_equal(theirs.outputs[name], ours.outputs[name][:args.lava_samples]) for name in layers)
    spikes = sum(int(theirs.outputs[name].sum()) for name in layers)
    print(f"compared every spike of {len(layers)} layers on {args.lava_samples} samples ({spikes} spikes): "
          f"{'identical' if exact else 'DIFFERENT'}")
    print(f"speedup_vs_lava={loihi_rate / lava_rate:.1f} bit_exact={'true' if exact else 'false'}")


if __name__ == "__main__":
    main()
