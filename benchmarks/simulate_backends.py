"""Inference speed and memory of the backends `fer2neuro verify` runs, side
by side: the snnTorch model (float32 as trained, float64 as the reference)
and the NIR reference target (float64 numpy) on the exported graph.

Same weights, same samples (T=4, direct encoding), every spiking layer's
spike trains kept, as verification does. Each variant runs in its own
process so its peak memory (max RSS) is its own.

    python benchmarks/simulate_backends.py [--preset small|paper] [--samples 16] [--repeats 3]

The last line is `nir_vs_snntorch_float64=<speed ratio>`.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from fer2neuro.exporters.nir_export import model_to_nir
from fer2neuro.model.config import preset_config
from fer2neuro.model.network import build_model
from fer2neuro.targets import get_target
from harness import peak_rss_mb, run_variant  # benchmarks/harness.py, next to this script

VARIANTS = ("snntorch-float32", "snntorch-float64", "nir-float64")


def measure(variant: str, preset: str, samples: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_model(preset_config(preset, timesteps=4)).eval()
    x = torch.rand(samples, 1, 48, 48)
    if variant.startswith("snntorch"):
        dtype = torch.float64 if variant.endswith("64") else torch.float32
        model = model.to(dtype)
        run = lambda: model.record(x.to(dtype))  # noqa: E731
    else:
        graph = model_to_nir(model)
        target = get_target("nir")
        inputs = np.repeat(x.double().numpy()[:, None], 4, axis=1)      # (B, T, 1, 48, 48)
        run = lambda: target.run(graph, inputs, record=list(model.spiking_layers))  # noqa: E731
    run()                                                  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        run()
    seconds = (time.perf_counter() - t0) / repeats
    return {"variant": variant, "samples_per_s": samples / seconds, "seconds": seconds,
            "max_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # child process
        print(json.dumps(measure(args.variant, args.preset, args.samples, args.repeats)))
        return
    print(f"inference, preset {args.preset}, T=4, direct encoding, {args.samples} samples, every spiking "
          f"layer recorded, mean of {args.repeats} runs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    results = {}
    for variant in VARIANTS:
        results[variant] = r = run_variant(__file__, variant, ["--preset", args.preset, "--samples",
                                                               str(args.samples), "--repeats", str(args.repeats)])
        print(f"{variant:<18} {r['samples_per_s']:8.2f} samples/s  {r['seconds']:7.3f} s/batch  "
              f"peak RSS {r['max_rss_mb']:7.0f} MB", flush=True)
    ratio = results["nir-float64"]["samples_per_s"] / results["snntorch-float64"]["samples_per_s"]
    print(f"nir_vs_snntorch_float64={ratio:.2f}")


if __name__ == "__main__":
    main()
