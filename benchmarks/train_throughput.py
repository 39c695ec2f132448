"""Training throughput of the paper network: fer2neuro's two neuron engines
against a naive snnTorch loop, SpikingJelly 2.0 and a neuron-free floor, side
by side in one run.

Every variant trains the same network (SPEC §1; T=4, batch 16, direct
encoding, the same initial weights and the same random inputs and labels, all
fixed by seed) with the same loss (rate MSE, label smoothing 0.1) and the same
optimizer (fer2neuro's ``build_optimizer``: Adam, lr 1e-3). One step is
forward + backward + optimizer step, in train mode (dropout and batch
statistics on).

- ``fused``: ``build_model(config, engine="fused")``, one autograd Function
  over each neuron layer's time loop (a compiled C kernel for float32 and
  bfloat16 on the CPU; in training it also does the 2x2 max pool after each
  conv IF layer, never writing the full-resolution spikes).
- ``snntorch-engine``: ``build_model(config, engine="snntorch")``, snnTorch's
  ``Leaky`` called once per step inside each neuron layer. Both fer2neuro
  engines run conv1 + BN once per sample (the input is constant) and every
  other stateless layer on all T steps at once (time folded into the batch).
- ``naive-snntorch``: the snnTorch tutorial style, every layer (conv1 + BN
  included) called once per time step.
- ``spikingjelly``: SpikingJelly 2.0 multi-step mode, ``IFNode`` / ``LIFNode``
  (tau 2, decay_input, hard reset to 0, ATan surrogate, reset not detached;
  SpikingJelly 2.0 has no ``backend`` argument any more: on the CPU it always
  runs its torch implementation, in float32 a registered operator per layer
  looping over time), stateless layers in
  ``SeqToANNContainer`` and multi-step ``MaxPool2d`` / ``Flatten`` /
  ``Dropout``; conv1 + BN once per sample like fer2neuro.
  ``functional.reset_net`` before every forward.
- ``floor``: the same layers and torch ops as fer2neuro (torch's
  ``MaxPool2d`` included), with every neuron layer replaced by a bare
  threshold ``x > 1`` with a straight-through gradient and no membrane at
  all: what the step costs in torch without neurons. Because the fused
  engine pools inside its kernel, it can beat this floor (a negative
  ``neuron_overhead``).

Precision ``fp32`` is plain float32; ``bf16`` runs the forward pass and the
loss under ``torch.autocast(dtype=torch.bfloat16)``, weights and optimizer in
float32.

Before timing, the script checks in float64 (eval mode, head weights x 3 so
the output layer spikes) that the fer2neuro engines, the naive loop and
SpikingJelly give the same spikes for the same weights: the output of a plain
forward (the training path) and, where exposed, every neuron layer. It
repeats the check in float32 for information (the fused C kernel runs only
there; note SpikingJelly fires on ``v >= 1``, fer2neuro on ``v > 1``, so an
exact tie would differ).

How it times: each variant runs in its own long-lived child process (its peak
RSS is its own), started once per preset x precision and driven over pipes.
The rounds interleave: in each round every variant runs ``--steps`` timed
steps, in an order rotated round by round, so a slow spell of a shared machine
hits every variant alike (on a shared 2-core machine the min-max spread
still shows how noisy a run was; ``--threads 1`` suffers less when another
job holds a core). After one untimed warm-up step, the table reports
the median samples/s over the rounds (min-max), seconds per step at the
median and each child's peak RSS (``VmHWM``: Linux's ``ru_maxrss`` would
include the driver's memory, which a child inherits over fork and exec).

    python benchmarks/train_throughput.py [--presets paper,small] [--precisions fp32,bf16]
        [--variants fused,snntorch-engine,naive-snntorch,spikingjelly,floor]
        [--rounds 7] [--steps N] [--batch 16] [--threads N]
    python benchmarks/train_throughput.py --presets small --rounds 2 --steps 1    # smoke run

SpikingJelly is optional (``pip install --no-deps -r requirements/bench.txt``,
as ``make benchmark`` does); without it that variant is skipped. The last two
lines are, on the paper preset (``n/a`` where a variant did not run)::

    bf16_speedup_vs_spikingjelly=<fused bf16 samples/s / spikingjelly fp32 samples/s>
    speedup_vs_spikingjelly=<fused fp32 / spikingjelly fp32> neuron_overhead=<fused fp32 s/step / floor fp32 s/step - 1>
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import sys
import time

import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn

from fer2neuro.model.config import ModelConfig, preset_config
from fer2neuro.model.layers import NEURON_KINDS, layer_names, network_layers
from fer2neuro.model.network import build_model
from fer2neuro.training.losses import rate_mse_loss
from fer2neuro.training.optim import build_optimizer
from harness import Worker, WorkerError, median_range, serve  # benchmarks/harness.py, next to this script

# The neuron layers of the two-conv template that the SpikingJelly, naive and
# floor variants below write by hand; fer2neuro's own engines run any preset.
LAYERS = layer_names(ModelConfig(), *NEURON_KINDS)
ANY_ARCHITECTURE = ("fused", "snntorch-engine")


def is_template(preset: str) -> bool:
    """Whether ``preset`` has the paper's two-conv structure (any widths)."""
    return [layer.kind for layer in network_layers(preset_config(preset))] == \
        [layer.kind for layer in network_layers(ModelConfig())] and \
        layer_names(preset_config(preset), *NEURON_KINDS) == LAYERS

VARIANTS = ("fused", "snntorch-engine", "naive-snntorch", "spikingjelly", "floor")
PRECISIONS = ("fp32", "bf16")
STEPS = {"paper": 5, "small": 25}   # timed steps per round, by preset (--steps overrides)
TIMESTEPS, LR, SMOOTHING = 4, 1e-3, 0.1


def spikingjelly_available() -> bool:
    try:
        import spikingjelly.activation_based  # noqa: F401
    except ImportError:
        return False
    return True


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


class SpikingJellyNet(nn.Module):
    """The same network in SpikingJelly 2.0 multi-step mode, on a copy of
    ``reference``'s layers (same weights). Input (B, 1, H, W), output spikes
    (T, B, classes); call ``functional.reset_net`` before each forward."""

    def __init__(self, reference: nn.Module):
        super().__init__()
        from spikingjelly.activation_based import layer, neuron
        from spikingjelly.activation_based import surrogate as sj_surrogate

        c = reference.config
        self.T = c.timesteps
        own = lambda *modules: [copy.deepcopy(m) for m in modules]
        node = dict(v_threshold=c.v_threshold, v_reset=0.0, surrogate_function=sj_surrogate.ATan(alpha=2.0),
                    detach_reset=False, step_mode="m")
        if_node = lambda: neuron.IFNode(**node)
        lif_node = lambda: neuron.LIFNode(tau=float(c.tau), decay_input=True, **node)
        dropout = lambda: layer.Dropout(c.dropout, step_mode="m") if c.dropout > 0 else nn.Identity()
        self.static = nn.Sequential(*own(reference.conv1, reference.bn1))   # once per sample
        self.if1 = if_node()
        self.pool1 = layer.MaxPool2d(2, step_mode="m")
        self.conv2 = layer.SeqToANNContainer(*own(reference.conv2, reference.bn2))
        self.if2 = if_node()
        self.pool2 = layer.MaxPool2d(2, step_mode="m")
        self.flatten = layer.Flatten(step_mode="m")
        self.drop1 = dropout()
        self.fc1 = layer.SeqToANNContainer(*own(reference.fc1))
        self.lif1 = lif_node()
        self.drop2 = dropout()
        self.fc2 = layer.SeqToANNContainer(*own(reference.fc2))
        self.lif2 = lif_node()
        self.fc3 = layer.SeqToANNContainer(*own(reference.fc3))
        self.lif_out = lif_node()

    def forward(self, x):
        current = self.static(x)
        s = self.pool1(self.if1(current.unsqueeze(0).expand(self.T, *current.shape)))
        s = self.flatten(self.pool2(self.if2(self.conv2(s))))
        s = self.lif1(self.fc1(self.drop1(s)))
        s = self.lif2(self.fc2(self.drop2(s)))
        return self.lif_out(self.fc3(s))


class _StraightThroughThreshold(torch.autograd.Function):
    """``x > threshold`` forward, the incoming gradient unchanged backward."""

    @staticmethod
    def forward(ctx, x, threshold: float):
        return (x > threshold).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class NeuronFreeFloor(nn.Module):
    """fer2neuro's layers and time folding, with each neuron layer replaced by
    a stateless straight-through threshold: the cost of a step without
    neurons. Not the same function (no membrane), so never compared."""

    def __init__(self, reference: nn.Module):
        super().__init__()
        c = reference.config
        self.T, self.threshold = c.timesteps, c.v_threshold
        self.conv1, self.bn1, self.conv2, self.bn2 = reference.conv1, reference.bn1, reference.conv2, reference.bn2
        self.pool1, self.pool2 = reference.pool1, reference.pool2
        self.drop1, self.drop2 = reference.drop1, reference.drop2       # time-shared masks, as fer2neuro
        self.fc1, self.fc2, self.fc3 = reference.fc1, reference.fc2, reference.fc3

    def forward(self, x):
        spike = lambda current: _StraightThroughThreshold.apply(current, self.threshold)
        current = self.bn1(self.conv1(x))                                      # once per sample
        s = spike(current.unsqueeze(0).expand(self.T, *current.shape))         # (T, B, C, H, W)
        s = self.pool1(s.flatten(0, 1))                                        # time folded into batch
        s = self.pool2(spike(self.bn2(self.conv2(s))))
        s = self.drop1(s.unflatten(0, (self.T, -1)).flatten(2))                # (T, B, features)
        s = spike(self.fc1(s))
        s = spike(self.fc2(self.drop2(s)))
        return spike(self.fc3(s))


def build_variant(variant: str, preset: str) -> nn.Module:
    """The network ``variant`` trains, with the weights every variant starts
    from (seed 0, fer2neuro's initialisation)."""
    config = preset_config(preset, timesteps=TIMESTEPS, encoder="direct")
    torch.manual_seed(0)
    reference = build_model(config, engine="snntorch")
    if variant == "snntorch-engine":
        return reference
    if variant == "fused":
        net = build_model(config, engine="fused")
        net.load_state_dict(reference.state_dict())
        return net
    if variant == "naive-snntorch":
        return NaiveSnnTorch(reference)
    if variant == "spikingjelly":
        return SpikingJellyNet(reference)
    if variant == "floor":
        return NeuronFreeFloor(reference)
    raise ValueError(variant)


def optimizer_name(opt: torch.optim.Optimizer) -> str:
    group = opt.param_groups[0]
    kind = "fused" if group.get("fused") else "foreach" if group.get("foreach") else "for-loop"
    return f"{type(opt).__name__} ({kind}), lr {group['lr']:g}"


# ---------------------------------------------------------------- child side

def child(variant: str, preset: str, precision: str, batch: int, threads: int | None) -> None:
    """Build the variant, warm it up, then answer {"cmd": "run", "steps": N}
    with the seconds N training steps took."""
    state = {}

    def ready() -> dict:
        if threads:
            torch.set_num_threads(threads)
        t0 = time.perf_counter()
        net = build_variant(variant, preset).train()
        reset = None
        if variant == "spikingjelly":
            from spikingjelly.activation_based import functional
            reset = functional.reset_net
        device = next(net.parameters()).device
        opt = build_optimizer(net.parameters(), LR, device)
        config = preset_config(preset)
        torch.manual_seed(1)
        x = torch.rand(batch, 1, config.image_size, config.image_size)
        y = torch.randint(0, config.num_classes, (batch,))
        autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" \
            else contextlib.nullcontext

        def train_step() -> None:
            if reset is not None:
                reset(net)
            with autocast():
                loss = rate_mse_loss(net(x), y, SMOOTHING)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_step()                                  # warm-up: allocator, kernels, lazy state
        state["step"] = train_step
        return {"ready": True, "build_s": build_s, "warmup_s": time.perf_counter() - t0,
                "optimizer": optimizer_name(opt), "threads": torch.get_num_threads()}

    def handle(request: dict) -> dict:
        if request.get("cmd") != "run":
            raise ValueError(f"unknown request {request}")
        step = state["step"]
        t0 = time.perf_counter()
        for _ in range(request["steps"]):
            step()
        return {"seconds": time.perf_counter() - t0}

    serve(ready, handle)


# --------------------------------------------------------------- driver side

def _spikes_of_sj(net: SpikingJellyNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    from spikingjelly.activation_based import functional

    trace = {}
    hooks = [getattr(net, name).register_forward_hook(
        lambda module, args, out, name=name: trace.__setitem__(name, out)) for name in LAYERS]
    functional.reset_net(net)
    try:
        with torch.no_grad():
            trace["output"] = net(x)
    finally:
        for hook in hooks:
            hook.remove()
    return trace


def check_same_function(preset: str, dtype: torch.dtype, with_sj: bool) -> list[str]:
    """Each implementation against fer2neuro's snntorch engine, same weights,
    eval mode, in ``dtype``, on 8 random images: the output spikes of a plain
    forward (the path training takes; the fused engine pools inside its
    kernel there) and, where the implementation exposes them, every neuron
    layer's spikes (fer2neuro's ``record``, which pools apart; SpikingJelly
    through forward hooks). Returns the lines to print."""
    torch.manual_seed(1)
    config = preset_config(preset, timesteps=TIMESTEPS)
    reference = build_model(config, engine="snntorch").to(dtype).eval()
    with torch.no_grad():  # a livelier head, so the output layer spikes at all
        for layer in reference.layers:
            if layer.kind == "linear":
                getattr(reference, layer.name).weight.mul_(3.0)
    neuron_layers = reference.neuron_layers
    x = torch.rand(8, 1, config.image_size, config.image_size, dtype=dtype)
    expected = reference.record(x)
    with torch.no_grad():
        expected["output"] = reference(x)
    counts = ", ".join(f"{name} {int(expected[name].sum()):,}" for name in ("output", *neuron_layers))
    lines = [f"  reference spikes: {counts}"]

    def compare(label: str, got: dict[str, torch.Tensor]) -> str:
        differ = {name: int((t.to(dtype) != expected[name]).sum()) for name, t in got.items()}
        layers = [name for name in neuron_layers if name in got]
        what = f"output {expected['output'].numel():,} elements"
        if layers:
            n = sum(expected[name].numel() for name in layers)
            what += f" + {len(layers)} neuron layers {n:,} elements"
        where = "".join(f", {name} {n:,} differ" for name, n in differ.items() if n)
        return f"  {label:<16} {not any(differ.values())}  ({what}{where})"

    try:
        fused = build_model(config, engine="fused").to(dtype)
        fused.load_state_dict(reference.state_dict())
        fused.eval()
        with torch.no_grad():
            got = {"output": fused(x), **{name: t for name, t in fused.record(x).items() if name in neuron_layers}}
        lines.append(compare("fused", got))
        del fused
    except Exception as exc:  # noqa: BLE001 - an unfinished engine is reported, not fatal
        lines.append(f"  {'fused':<16} error: {type(exc).__name__}: {exc}")
    if not is_template(preset):
        return lines + [f"  (naive-snntorch, spikingjelly: written for the two-conv presets, not {preset})"]
    with torch.no_grad():
        lines.append(compare("naive-snntorch", {"output": NaiveSnnTorch(reference).eval()(x)}))
    if with_sj:
        lines.append(compare("spikingjelly", _spikes_of_sj(SpikingJellyNet(reference).to(dtype).eval(), x)))
    return lines


def run_group(preset: str, precision: str, variants: list[str], rounds: int, steps: int,
              batch: int, threads: int | None) -> dict[str, dict]:
    """Start one child per variant, interleave ``rounds`` rounds of ``steps``
    timed steps, collect peak RSS, stop the children."""
    workers, results = {}, {}
    common = ["--preset", preset, "--precision", precision, "--batch", str(batch)]
    if threads:
        common += ["--threads", str(threads)]
    try:
        for variant in variants:
            print(f"  [{preset} {precision}] starting {variant} ...", file=sys.stderr, flush=True)
            try:
                workers[variant] = Worker(__file__, ["--child", variant, *common])
                results[variant] = {"samples_per_s": [], "hello": workers[variant].hello}
            except WorkerError as exc:
                results[variant] = {"error": str(exc)}
        for r in range(rounds):
            live = [v for v in variants if v in workers]
            order = live[r % len(live):] + live[:r % len(live)] if live else []
            print(f"  [{preset} {precision}] round {r + 1}/{rounds}", file=sys.stderr, flush=True)
            for variant in order:
                try:
                    reply = workers[variant].request(cmd="run", steps=steps)
                    results[variant]["samples_per_s"].append(steps * batch / reply["seconds"])
                except WorkerError as exc:
                    results[variant] = {"error": str(exc)}
                    workers.pop(variant).close()
        for variant, worker in workers.items():
            results[variant]["max_rss_mb"] = worker.request(cmd="rss")["max_rss_mb"]
    finally:
        for worker in workers.values():
            worker.close()
    return results


def print_table(preset: str, precision: str, results: dict[str, dict], rounds: int, steps: int,
                batch: int) -> dict[str, float]:
    """The table; returns the median samples/s of each variant that ran."""
    print(f"\n{preset} preset, {precision}: {rounds} rounds x {steps} steps x batch {batch}, interleaved")
    print(f"  {'variant':<16} {'samples/s median (min-max)':>28} {'s/step':>8} {'peak RSS MB':>12}")
    medians = {}
    for variant, r in results.items():
        if "error" in r:
            print(f"  {variant:<16} failed: {r['error']}")
            continue
        med, lo, hi = median_range(r["samples_per_s"])
        medians[variant] = med
        spread = f"{med:.2f} ({lo:.2f}-{hi:.2f})"
        print(f"  {variant:<16} {spread:>28} {batch / med:8.3f} {r['max_rss_mb']:12.0f}")
    return medians


def ratio(a: float | None, b: float | None, digits: int, minus_one: bool = False) -> str:
    if a is None or b is None:
        return "n/a"
    return f"{a / b - (1 if minus_one else 0):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="paper,small", help="comma-separated (default paper,small)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per variant and round (default: paper 5, small 25)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per child (default: torch's)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=PRECISIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.preset, args.precision, args.batch, args.threads)
        return

    split = lambda text: [item.strip() for item in text.split(",") if item.strip()]
    presets, precisions, variants = split(args.presets), split(args.precisions), split(args.variants)
    for name, chosen, allowed in (("precision", precisions, PRECISIONS), ("variant", variants, VARIANTS)):
        unknown = [c for c in chosen if c not in allowed]
        if unknown:
            parser.error(f"unknown {name} {', '.join(unknown)}: use {', '.join(allowed)}")
    for preset in presets:
        try:
            preset_config(preset)
        except Exception as exc:  # noqa: BLE001 - fer2neuro's ConfigError, one line
            parser.error(str(exc))
    if args.rounds < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--rounds and --steps must be >= 1")

    with_sj = spikingjelly_available()
    if args.threads:
        torch.set_num_threads(args.threads)
    opt = build_optimizer([nn.Parameter(torch.zeros(1))], LR, torch.device("cpu"))
    print(f"training throughput: presets {','.join(presets)}, T={TIMESTEPS}, batch {args.batch}, "
          f"direct encoding, rate-MSE (smoothing {SMOOTHING}), {optimizer_name(opt)}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}", flush=True)
    if with_sj:
        import importlib.metadata
        print(f"spikingjelly {importlib.metadata.version('spikingjelly')} (multi-step mode, its CPU torch implementation)")
    else:
        print("spikingjelly not installed (pip install --no-deps -r requirements/bench.txt): "
              "skipping the spikingjelly variant")
        variants = [v for v in variants if v != "spikingjelly"]

    for preset in presets:
        for dtype in (torch.float64, torch.float32):
            what = "" if dtype == torch.float64 else " (for information: the fused C kernel runs here, and rounding may flip a spike)"
            print(f"same spikes as fer2neuro's snntorch engine? {preset} preset, {str(dtype)[6:]}, eval, "
                  f"8 random images, head weights x3{what}:", flush=True)
            for line in check_same_function(preset, dtype, with_sj):
                print(line, flush=True)

    medians: dict[tuple[str, str], dict[str, float]] = {}
    for preset in presets:
        steps = args.steps or STEPS.get(preset, 3)
        runnable = variants if is_template(preset) else [v for v in variants if v in ANY_ARCHITECTURE]
        for precision in precisions:
            results = run_group(preset, precision, runnable, args.rounds, steps, args.batch, args.threads)
            medians[preset, precision] = print_table(preset, precision, results, args.rounds, steps, args.batch)
            sys.stdout.flush()

    fp32, bf16 = medians.get(("paper", "fp32"), {}), medians.get(("paper", "bf16"), {})
    print(f"bf16_speedup_vs_spikingjelly={ratio(bf16.get('fused'), fp32.get('spikingjelly'), 2)}")
    print(f"speedup_vs_spikingjelly={ratio(fp32.get('fused'), fp32.get('spikingjelly'), 2)} "
          f"neuron_overhead={ratio(fp32.get('floor'), fp32.get('fused'), 3, minus_one=True)}")


if __name__ == "__main__":
    main()
