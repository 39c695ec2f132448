"""Training throughput of the paper network: fer2neuro's time-folded model vs a
naive snnTorch loop, side by side in one run.

Both train the same network (paper preset, T=4, batch 16, direct encoding,
same initial weights) with the same loss and optimizer. The naive loop is the
snnTorch tutorial style: every layer, conv1 + BN included, is called once per
time step. fer2neuro runs conv1 + BN once per sample (the input is constant)
and runs every stateless layer on all T steps at once, looping over time only
for the neuron updates. Each variant runs in its own process so its peak
memory (max RSS) is its own.

    python benchmarks/train_throughput.py [--preset paper] [--steps 5] [--batch 16]

The last line is `speedup_vs_naive_snntorch=<ratio>`.
"""
from __future__ import annotations

import argparse
import json
import time

import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn

from fer2neuro.model.config import preset_config
from fer2neuro.model.network import build_model
from fer2neuro.training.loop import rate_mse_loss
from harness import peak_rss_mb, run_variant  # benchmarks/harness.py, next to this script


class NaiveSnnTorch(nn.Module):
    """The same network written as a plain snnTorch per-step loop."""

    def __init__(self, reference: nn.Module):
        super().__init__()
        c = reference.config
        self.T = c.timesteps
        self.conv1, self.bn1, self.conv2, self.bn2 = reference.conv1, reference.bn1, reference.conv2, reference.bn2
        self.fc1, self.fc2, self.fc3 = reference.fc1, reference.fc2, reference.fc3
        self.pool = nn.MaxPool2d(2)
        self.drop1, self.drop2 = nn.Dropout(c.dropout), nn.Dropout(c.dropout)
        spike = surrogate.atan(alpha=2.0)
        make = lambda beta: snn.Leaky(beta=beta, threshold=1.0, spike_grad=spike,
                                      reset_mechanism="zero", reset_delay=False)
        self.if1, self.if2 = make(1.0), make(1.0)
        beta = 1.0 - 1.0 / c.tau          # SPEC §2 LIF in snnTorch terms, fed with I / tau
        self.lif1, self.lif2, self.lif3 = make(beta), make(beta), make(beta)
        self.tau = c.tau

    def forward(self, x):
        mems = [None] * 5

        def step(i, neuron, cur):
            if mems[i] is None:
                mems[i] = torch.zeros_like(cur)
            spk, mems[i] = neuron(cur, mems[i])
            return spk.to(cur.dtype)  # snnTorch's ATan returns float32 spikes

        out = []
        for _ in range(self.T):
            s = self.pool(step(0, self.if1, self.bn1(self.conv1(x))))
            s = self.pool(step(1, self.if2, self.bn2(self.conv2(s)))).flatten(1)
            s = step(2, self.lif1, self.fc1(self.drop1(s)) / self.tau)
            s = step(3, self.lif2, self.fc2(self.drop2(s)) / self.tau)
            out.append(step(4, self.lif3, self.fc3(s) / self.tau))
        return torch.stack(out)


def measure(variant: str, preset: str, steps: int, batch: int, threads: int | None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(preset_config(preset, timesteps=4, encoder="direct"))
    net = model if variant == "fer2neuro" else NaiveSnnTorch(model)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, 48, 48)
    y = torch.randint(0, 7, (batch,))

    def train_step():
        loss = rate_mse_loss(net(x), y, 0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    train_step()                                  # warm-up (allocator, kernels)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step()
    seconds = time.perf_counter() - t0
    return {"variant": variant, "samples_per_s": steps * batch / seconds,
            "seconds_per_step": seconds / steps,
            "max_rss_mb": peak_rss_mb()}


def check_same_function(preset: str) -> tuple[bool, int]:
    """Both implementations compute the same output spikes (eval mode,
    float64); returns (equal, number of output spikes compared)."""
    torch.manual_seed(1)
    model = build_model(preset_config(preset, timesteps=4)).double().eval()
    with torch.no_grad():  # a livelier head, so the output layer spikes at all
        for fc in (model.fc1, model.fc2, model.fc3):
            fc.weight.mul_(3.0)
    naive = NaiveSnnTorch(model).double().eval()
    x = torch.rand(4, 1, 48, 48, dtype=torch.float64)
    with torch.no_grad():
        ours = model(x)
        return torch.equal(ours, naive(x)), int(ours.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variant", choices=["fer2neuro", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # child process
        print(json.dumps(measure(args.variant, args.preset, args.steps, args.batch, args.threads)))
        return
    print(f"paper-structure net, preset {args.preset}, T=4, batch {args.batch}, direct encoding, "
          f"{args.steps} timed train steps each, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    same, n_spikes = check_same_function(args.preset)
    print(f"same output spikes (float64, eval, {n_spikes} output spikes compared): {same}", flush=True)
    results = {}
    for variant in ("naive", "fer2neuro"):
        extra = ["--preset", args.preset, "--steps", str(args.steps), "--batch", str(args.batch)]
        if args.threads:
            extra += ["--threads", str(args.threads)]
        results[variant] = r = run_variant(__file__, variant, extra)
        label = "naive snnTorch loop" if variant == "naive" else "fer2neuro (time-folded)"
        print(f"{label:<26} {r['samples_per_s']:8.2f} samples/s  {r['seconds_per_step']:7.3f} s/step  "
              f"peak RSS {r['max_rss_mb']:7.0f} MB", flush=True)
    ratio = results["fer2neuro"]["samples_per_s"] / results["naive"]["samples_per_s"]
    print(f"speedup_vs_naive_snntorch={ratio:.2f}")


if __name__ == "__main__":
    main()
