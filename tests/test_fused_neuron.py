"""The fused multi-step neuron against snnTorch's ``Leaky`` and against the pure
step unrolled by autograd: same spikes, same membranes, same gradients.

Both implementations are tested: the C kernel (float32 / bfloat16 on the CPU)
and the torch-ops path (float64, CUDA, no compiler). Currents are drawn so that
many steps land exactly on the threshold (multiples of 1/8 are exact in binary)
and the strict ``>`` is exercised, alongside random float currents.
"""
from __future__ import annotations

import copy
import math
import os
import subprocess
import sys

import pytest
import snntorch as snn
import torch
from snntorch import surrogate

from fer2neuro.model import fused, kernels
from fer2neuro.model.config import preset_config
from fer2neuro.model.network import build_model
from fer2neuro.model.neuron_step import NeuronParams, run_steps
from fer2neuro.model.neurons import IFNeuron, LIFNeuron
from fer2neuro.training.losses import rate_mse_loss

KINDS = {"IF": NeuronParams.integrate_and_fire(), "LIF": NeuronParams.leaky(2.0)}
needs_kernel = pytest.mark.skipif(kernels.load() is None,
                                  reason=f"no fused-neuron kernel here ({kernels.unavailable_reason()})")


def currents(kind: str, encoding: str, T: int, n: int = 600, seed: int = 0,
             dtype=torch.float64) -> torch.Tensor:
    """(T, 3, n) input currents, or one (3, n) current for direct encoding.
    Half the values are multiples of 1/8 (exact threshold ties), half random."""
    g = torch.Generator().manual_seed(seed * 100 + T)
    scale = 2.0 if kind == "LIF" else 1.0          # the LIF sees I / tau
    if encoding == "direct":
        grid = torch.randint(-4, 13, (3, n), generator=g) / 8.0
        rand = torch.rand((3, n), generator=g, dtype=torch.float64) * 1.6 - 0.3
        x = torch.where(torch.rand((3, n), generator=g) < 0.5, grid, rand) * scale
    else:  # Poisson spikes through integer-ish weights: sums of multiples of 1/8
        spikes = (torch.rand((T, 3, 16), generator=g) < 0.4).double()
        w = torch.randint(-3, 6, (16, n), generator=g).double() / 8.0
        jitter = torch.rand((16, n), generator=g, dtype=torch.float64) / 10
        w = torch.where(torch.rand((16, n), generator=g) < 0.3, w + jitter, w)
        x = spikes @ w * scale
    return x.to(dtype)


def snntorch_reference(p: NeuronParams, x: torch.Tensor, steps: int | None):
    """snnTorch's own Leaky, stepped by hand: (spikes, membranes) over time."""
    leaky = snn.Leaky(beta=p.beta, threshold=p.threshold, spike_grad=surrogate.atan(alpha=2.0),
                      reset_mechanism="zero", reset_delay=False).to(x.dtype)
    T = steps or x.shape[0]
    mem = torch.zeros_like(x if steps else x[0])
    spikes, mems = [], []
    for t in range(T):
        current = (x if steps else x[t]) * p.input_scale
        s, mem = leaky(current, mem)
        spikes.append(s.to(x.dtype))
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||: the relative error of a whole tensor."""
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))


def grad_of(fn, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    (fn(x) * weights).sum().backward()
    return x.grad


def loss_weights(shape, seed: int = 3, dtype=torch.float64) -> torch.Tensor:
    """Random upstream gradients, so every step's spikes matter to the loss."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def gradient_case(kind: str, encoding: str, T: int, dtype=torch.float64):
    """(params, steps, currents, upstream gradient) of one parametrised case."""
    x = currents(kind, encoding, T, dtype=dtype)
    return KINDS[kind], T if encoding == "direct" else None, x, loss_weights((T, *x.shape[-2:]), dtype=dtype)


# ---- spikes and membranes ------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("encoding", ["direct", "poisson"])
@pytest.mark.parametrize("T", range(1, 9))
def test_spikes_and_membranes_equal_snntorch_leaky(kind, encoding, T):
    p = KINDS[kind]
    steps = T if encoding == "direct" else None
    x = currents(kind, encoding, T)
    ref_spikes, ref_mems = snntorch_reference(p, x, steps)
    assert 0 < ref_spikes.mean() < 1
    if kind == "IF" or T > 1:      # the grid makes some steps land exactly on the threshold
        ties = (run_steps(x, p, steps, record_membrane=True)[1] == p.threshold).sum()
        assert ties > 0
    spikes, mems = run_steps(x, p, steps, record_membrane=True)     # the pure step
    assert torch.equal(spikes, ref_spikes) and torch.equal(mems, ref_mems)
    assert torch.equal(fused.multistep(x, p, steps), ref_spikes)    # torch-ops path, float64
    x32 = x.float()
    ref32, _ = snntorch_reference(p, x32, steps)
    assert torch.equal(fused.multistep(x32, p, steps, use_kernel=False), ref32)
    if kernels.load() is not None:
        assert torch.equal(fused.multistep(x32, p, steps), ref32)     # the C kernel, float32


@pytest.mark.parametrize("engine", ["fused", "snntorch"])
def test_layer_modules_record_the_same_membranes(engine):
    x = currents("LIF", "poisson", 6)
    for neuron in (IFNeuron(engine=engine), LIFNeuron(2.0, engine=engine)):
        spikes, mems = neuron.double()(x, record_membrane=True)
        ref_spikes, ref_mems = snntorch_reference(neuron.params, x, None)
        assert torch.equal(spikes, ref_spikes) and torch.equal(mems, ref_mems)


# ---- gradients -----------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("encoding", ["direct", "poisson"])
@pytest.mark.parametrize("T", range(1, 9))
def test_gradient_equals_the_pure_step_unrolled_in_float64(kind, encoding, T):
    p, steps, x, w = gradient_case(kind, encoding, T)
    ours = grad_of(lambda c: fused.multistep(c, p, steps), x, w)
    ref = grad_of(lambda c: run_steps(c, p, steps), x, w)
    assert ref.abs().max() > 0
    assert relative_error(ours, ref) <= 1e-12


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("encoding", ["direct", "poisson"])
@pytest.mark.parametrize("T", [1, 4, 8])
def test_gradient_against_snntorch_bptt(kind, encoding, T):
    # snnTorch's ATan returns float32 spikes, so the gradient reaching it is
    # rounded to float32: agreement is to about 1e-7, not to float64 precision.
    p, steps, x, w = gradient_case(kind, encoding, T)
    ours = grad_of(lambda c: fused.multistep(c, p, steps), x, w)
    ref = grad_of(lambda c: snntorch_reference(p, c, steps)[0], x, w)
    assert relative_error(ours, ref) <= 1e-6


def test_reset_keeps_the_spike_in_the_graph():
    # dv/dh = 1 - s - h sigma'(h - theta): with a detached reset (1 - s) the
    # gradient through a spiking step's membrane would be 0, not -h sigma'.
    p = KINDS["IF"]
    x = torch.tensor([[1.5], [0.25]], dtype=torch.float64)         # spikes at t=0 (h = 1.5), then 0.25
    w = torch.tensor([[0.0], [1.0]], dtype=torch.float64)          # only the second spike matters
    g = grad_of(lambda c: fused.multistep(c, p), x, w)
    sigma = lambda u: 1.0 / (1.0 + (math.pi * u) ** 2)             # alpha = 2
    expected_t0 = sigma(0.25 - 1.0) * (1.0 - 1.0 - 1.5 * sigma(0.5))
    assert g[0, 0].item() == pytest.approx(expected_t0, rel=1e-12)
    assert g[0, 0].item() != 0.0


@needs_kernel
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("encoding", ["direct", "poisson"])
@pytest.mark.parametrize("T", [1, 3, 8])
def test_kernel_gradient_equals_the_pure_step_in_float32(kind, encoding, T):
    p, steps, x, w = gradient_case(kind, encoding, T, dtype=torch.float32)
    ours = grad_of(lambda c: fused.multistep(c, p, steps), x, w)
    torch_ops = grad_of(lambda c: fused.multistep(c, p, steps, use_kernel=False), x, w)
    ref = grad_of(lambda c: run_steps(c, p, steps), x, w)
    assert relative_error(ours, ref) <= 1e-6
    assert relative_error(torch_ops, ref) <= 1e-6


# ---- the fused 2x2 max pool ----------------------------------------------

def pool_reference(p, x, steps):
    s = run_steps(x, p, steps)
    return torch.nn.functional.max_pool2d(s.flatten(0, 1), 2).unflatten(0, (s.shape[0], -1))


@needs_kernel
@pytest.mark.parametrize("encoding", ["direct", "poisson"])
@pytest.mark.parametrize("T", [1, 2, 5])
def test_fused_max_pool_equals_neuron_then_max_pool2d(encoding, T):
    p = KINDS["IF"]
    g = torch.Generator().manual_seed(T)
    shape = (3, 5, 8, 12)                         # B, C, H, W
    if encoding == "direct":
        x = torch.randint(-2, 12, shape, generator=g).float() / 8
        steps = T
    else:
        x = torch.randint(-2, 12, (T, *shape), generator=g).float() / 8
        steps = None
    x = torch.where(torch.rand(x.shape, generator=g) < 0.5, x, torch.rand(x.shape, generator=g) * 1.5)
    pooled = fused.multistep_maxpool2x2(x, p, steps)
    ref = pool_reference(p, x, steps)
    assert torch.equal(pooled, ref)
    spikes = run_steps(x, p, steps)
    windows = spikes.unfold(-2, 2, 2).unfold(-2, 2, 2).sum((-1, -2))
    assert (windows >= 2).sum() > 10             # windows with several spikes: the argmax tie rule matters
    w = loss_weights(ref.shape, dtype=torch.float32)
    ours = grad_of(lambda c: fused.multistep_maxpool2x2(c, p, steps), x, w)
    expected = grad_of(lambda c: pool_reference(p, c, steps), x, w)
    assert relative_error(ours, expected) <= 1e-6


@needs_kernel
def test_bf16_kernel_keeps_float32_state():
    # bf16 inputs are exact in float32: the spikes must equal the float32 run
    # (the membrane is never rounded to bf16), and gradients agree to bf16's precision.
    p = KINDS["LIF"]
    x = currents("LIF", "poisson", 6, dtype=torch.float32).bfloat16()
    spikes = fused.multistep(x, p)
    assert spikes.dtype == torch.bfloat16
    assert torch.equal(spikes.float(), fused.multistep(x.float(), p))
    assert torch.equal(spikes.float(), fused.multistep(x, p, use_kernel=False).float())
    w = loss_weights(spikes.shape, dtype=torch.float32)
    g16 = grad_of(lambda c: fused.multistep(c, p), x, w.bfloat16())
    g32 = grad_of(lambda c: fused.multistep(c, p), x.float(), w.bfloat16().float())
    assert g16.dtype == torch.bfloat16
    assert relative_error(g16, g32) <= 1e-2


# ---- the whole model -----------------------------------------------------

@pytest.mark.parametrize("encoder", ["direct", "poisson"])
def test_one_training_step_is_the_same_with_either_engine(encoder):
    torch.manual_seed(0)
    config = preset_config("small", timesteps=4, encoder=encoder, dropout=0.3)
    reference = build_model(config, engine="snntorch")
    with torch.no_grad():                  # a head that spikes, so every layer's gradient is non-trivial
        for fc in (reference.fc1, reference.fc2, reference.fc3):
            fc.weight.mul_(3.0)
    x = torch.rand(8, 1, 48, 48, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 7
    results = {}
    for engine in ("snntorch", "fused"):
        model = copy.deepcopy(reference).set_engine(engine).train()
        torch.manual_seed(5)               # the same Poisson trains and dropout masks
        out = model(x)
        loss = rate_mse_loss(out, y, 0.1)
        loss.backward()
        results[engine] = out, loss, {k: v.grad for k, v in model.named_parameters()}
    (ref_out, ref_loss, ref_grads), (out, loss, grads) = results["snntorch"], results["fused"]
    assert ref_out.sum() > 0
    assert torch.equal(out, ref_out)
    assert loss.item() == ref_loss.item()
    for name, g in ref_grads.items():
        assert g.abs().max() > 0, name
        # float32 sums in another order: 1.1e-6 measured for conv1 with one thread
        assert relative_error(grads[name], g) <= 2e-6, name


def test_engines_share_the_state_dict():
    config = preset_config("small")
    a, b = build_model(config, engine="fused"), build_model(config, engine="snntorch")
    assert a.state_dict().keys() == b.state_dict().keys()
    b.load_state_dict(a.state_dict(), strict=True)


def test_unknown_engine_is_a_clear_error():
    from fer2neuro.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown engine 'jax'"):
        build_model(preset_config("small"), engine="jax")


# ---- building the kernel, and training without it -------------------------

def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


FALLBACK_CHECK = """
import torch
from fer2neuro.model import kernels, fused
from fer2neuro.model.neuron_step import NeuronParams
assert kernels.load() is None, "kernel loaded"
print(kernels.unavailable_reason())
x = torch.rand(4, 2, 8, 8, requires_grad=True)
s = fused.multistep(x * 2, NeuronParams.integrate_and_fire())
s.sum().backward()
assert s.sum() > 0 and x.grad.abs().sum() > 0
"""


def test_without_a_compiler_the_engine_falls_back_to_torch_ops(tmp_path):
    done = _python(FALLBACK_CHECK, CC="/bin/false", FER2NEURO_CACHE=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "/bin/false failed" in done.stdout
    assert not list((tmp_path / "kernels").glob("*.so"))       # nothing half-built left behind
    assert not list((tmp_path / "kernels").glob(".*"))


def test_kernel_can_be_switched_off(tmp_path):
    done = _python(FALLBACK_CHECK, FER2NEURO_KERNEL="off", FER2NEURO_CACHE=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "disabled by FER2NEURO_KERNEL" in done.stdout


@needs_kernel
def test_kernel_builds_into_its_cache(tmp_path):
    done = _python("from fer2neuro.model import kernels; print(kernels.build())", FER2NEURO_CACHE=str(tmp_path))
    assert done.returncode == 0, done.stderr
    built = list((tmp_path / "kernels").glob("fused_neuron-*.so"))
    assert len(built) == 1 and str(built[0]) == done.stdout.strip()
