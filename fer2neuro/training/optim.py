"""Adam, in the fastest implementation torch has that is still Adam.

torch ships three implementations of the same update: a per-parameter Python
loop (``foreach=False``), a multi-tensor one (``foreach=True``, torch's CUDA
default) and a fused kernel (``fused=True``, CPU and CUDA since torch 2.4).
On the paper preset (21,531,136 parameters, 18,432 x 1,152 of them in fc1)
an Adam step is pure memory traffic (parameter, gradient and two moments,
344 MB), and the fused kernel makes one pass over it::

    $ python -m fer2neuro.training.optim --preset paper     # median ms per step
    # 2-core Xeon (AVX-512 BF16), torch 2.13.0+cpu, 2 threads; three runs on a
    # box shared with other jobs, so the load varies between them
    for-loop   62.1   64.2  153.6
    foreach    39.8   48.9  130.7
    fused       5.1    9.0   13.8      (7 to 12 times faster than the loop)
    # --preset small (626,000 parameters): loop 1.8, foreach 0.5, fused 0.2

``foreach`` is bit-identical to the loop. The fused kernel computes the same
update in another order, so it differs from the loop in the last bits of
float32: on fixed gradients, after 30 steps max |diff| 6.0e-8, max relative
2.3e-7 (paper). In real training a spiking network amplifies any last-bit
difference (as it does a change of thread count or device): the first spike
flips after ~18 batches and the runs then part ways, to the same accuracy
(small preset, 3 epochs on 800 synthetic faces: validation 15.4 / 16.0 /
16.7 % with the loop, 16.1 / 14.4 / 17.4 % fused). A run is exactly
reproducible with itself, across ``--resume`` too: ``load_state_dict`` keeps
the implementation a run was saved with, so a run started with the loop
(before this module) resumes with the loop. Where ``fused=True`` is refused
(a device or dtype without the kernel), ``foreach`` is used.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch


def build_optimizer(parameters: Iterable[torch.nn.Parameter], lr: float,
                    device: torch.device | str = "cpu", weight_decay: float = 0.0) -> torch.optim.Adam:
    """``torch.optim.Adam(parameters, lr)``, fused on CPU and CUDA; with
    ``weight_decay`` > 0, AdamW with that decoupled decay on the conv and
    linear weights (not on BatchNorm's scale and shift)."""
    params = list(parameters)
    if weight_decay > 0:
        groups = [{"params": [p for p in params if p.dim() > 1], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        kind = torch.optim.AdamW
    else:
        groups, kind = params, torch.optim.Adam
    if torch.device(device).type in ("cpu", "cuda"):
        try:
            return kind(groups, lr=lr, fused=True)
        except (RuntimeError, TypeError):
            # "`fused=True` requires all the params to be floating point Tensors
            # of supported devices", or a torch without the keyword
            pass
    return kind(groups, lr=lr, foreach=True)


def implementation(optimizer: torch.optim.Optimizer) -> str:
    """What ``optimizer`` runs: "fused", "foreach" or "for-loop"."""
    group = optimizer.param_groups[0]
    if group.get("fused"):
        return "fused"
    foreach = group.get("foreach")
    if foreach is None:   # torch's default: foreach on CUDA, the loop on the CPU
        foreach = group["params"][0].device.type == "cuda"
    return "foreach" if foreach else "for-loop"


def _benchmark(preset: str, steps: int) -> None:
    """Median time of one Adam step per implementation, and how far each
    ends from the loop after ``steps`` steps (the figures above)."""
    import time

    from fer2neuro.model.config import preset_config
    from fer2neuro.model.network import build_model

    torch.manual_seed(0)
    start = [p.detach().clone() for p in build_model(preset_config(preset)).parameters()]
    grads = [[torch.randn_like(p) * 1e-3 for p in start] for _ in range(3)]
    print(f"{preset}: {sum(p.numel() for p in start):,} parameters, {torch.get_num_threads()} threads")
    final = {}
    for name, kw in (("for-loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        opt = torch.optim.Adam(params, lr=1e-3, **kw)
        times = []
        for i in range(steps):
            for p, g in zip(params, grads[i % 3]):
                p.grad = g
            t0 = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t0)
        times = sorted(times[3:])
        final[name] = params
        ref = final["for-loop"]
        diff = max((a - b).abs().max().item() for a, b in zip(params, ref))
        rel = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(params, ref))
        print(f"{name:9s} {times[len(times) // 2] * 1e3:7.2f} ms/step   vs for-loop after {steps} steps: "
              f"max |diff| {diff:.2g}, max rel {rel:.2g}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=_benchmark.__doc__)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    _benchmark(args.preset, args.steps)
