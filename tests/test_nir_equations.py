"""The NIR reference target's forward-Euler neuron equations against values
computed by hand (binary fractions, so every value is exact in float64), and
the neuron registry on numpy arrays and torch tensors alike."""
import dataclasses
from types import SimpleNamespace

import nir
import numpy as np
import pytest

from fer2neuro.targets.nir_reference import NIRReferenceTarget
from fer2neuro.nirgraph import equations as eq


def p(value, n=1):
    return np.full(n, value, dtype=np.float64)


def run_single(node, currents, dt=1.0):
    """Input -> node -> Output on one neuron; returns (outputs, v[, i])."""
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([1])}), "n": node,
                                "output": nir.Output(output_type={"output": np.array([1])})},
                         edges=[("input", "n"), ("n", "output")])
    x = np.asarray(currents, dtype=np.float64).reshape(-1, 1)          # (T, 1): one sample
    rec = NIRReferenceTarget().run(graph, x, dt=dt, record="all", record_states=True)
    out = rec.outputs["n"][0, :, 0].astype(np.float64)
    states = {k.split(".")[1]: v[0, :, 0] for k, v in rec.states.items()}
    return out, states


def test_if_integrates_and_ties_do_not_spike():
    # v: .5, .75, 1.0 (== threshold: no spike), 1.5 -> spike, reset 0, .75, 1.0
    out, s = run_single(nir.IF(r=p(1), v_threshold=p(1), v_reset=p(0)), [.5, .25, .25, .5, .75, .25])
    assert out.tolist() == [0, 0, 0, 1, 0, 0]
    assert s["v"].tolist() == [.5, .75, 1.0, 0.0, .75, 1.0]


def test_if_with_dt_r_and_reset_potential():
    # v += dt * r * I = 0.5 * I; reset to -0.5
    out, s = run_single(nir.IF(r=p(2), v_threshold=p(1), v_reset=p(-.5)), [1, 1, 1, 1, 1], dt=0.25)
    assert s["v"].tolist() == [.5, 1.0, -.5, 0.0, .5]
    assert out.tolist() == [0, 0, 1, 0, 0]


def test_lif_spec_form_tau_2():
    # SPEC §2: v' = v + (I - v) / 2
    out, s = run_single(nir.LIF(tau=p(2), r=p(1), v_leak=p(0), v_threshold=p(1), v_reset=p(0)),
                        [1, 1, 1, 2, 0])
    assert s["v"].tolist() == [.5, .75, .875, 0.0, 0.0]
    assert out.tolist() == [0, 0, 0, 1, 0]


def test_lif_with_leak_dt_and_r():
    # v += dt / tau * (v_leak - v + r I) = 0.5 * (0.5 - v + 3 I)
    out, s = run_single(nir.LIF(tau=p(4), r=p(3), v_leak=p(.5), v_threshold=p(1), v_reset=p(0)),
                        [0, .5, 0, 0], dt=2.0)
    assert s["v"].tolist() == [.25, 0.0, .25, .375]
    assert out.tolist() == [0, 1, 0, 0]


def test_leaky_integrator_and_integrator_emit_their_state():
    out, _ = run_single(nir.LI(tau=p(2), r=p(1), v_leak=p(0)), [1, 1, 0, 4])
    assert out.tolist() == [.5, .75, .375, 2.1875]
    out, _ = run_single(nir.I(r=p(2)), [1, -.5, .25], dt=0.5)
    assert out.tolist() == [1.0, .5, .75]


def test_cuba_lif_membrane_uses_the_same_steps_current():
    # i += dt/tau_syn (w_in S - i), v += dt/tau_mem (v_leak - v + r i), with i of this step
    node = nir.CubaLIF(tau_syn=p(2), tau_mem=p(4), r=p(1), v_leak=p(0), v_threshold=p(.8),
                       v_reset=p(0), w_in=p(2))
    out, s = run_single(node, [1, 0, 1, 1, 0])
    assert s["i"].tolist() == [1.0, .5, 1.25, 1.625, .8125]
    assert s["v"].tolist() == [.25, .3125, .546875, 0.0, .203125]
    assert out.tolist() == [0, 0, 0, 1, 0]


def test_cuba_li_emits_its_membrane():
    node = nir.CubaLI(tau_syn=p(2), tau_mem=p(4), r=p(1), v_leak=p(0), w_in=p(2))
    out, s = run_single(node, [1, 0, 1])
    assert out.tolist() == [.25, .3125, .546875]
    assert s["i"].tolist() == [1.0, .5, 1.25]


def test_threshold_is_strict():
    out, _ = run_single(nir.Threshold(threshold=p(1)), [.5, 1.0, 1.5])
    assert out.tolist() == [0, 0, 1]


@pytest.mark.parametrize("kind", ["IF", "LIF"])
def test_spec_neurons_match_the_snntorch_model_neurons(kind):
    """The NIR equations at dt = 1 against the model's snnTorch neurons (SPEC §2)."""
    import torch

    from fer2neuro.model.neurons import IFNeuron, LIFNeuron

    currents = np.random.default_rng(0).uniform(-0.5, 2.5, size=(50, 20))
    neuron = IFNeuron() if kind == "IF" else LIFNeuron(2.0)
    spikes, v = neuron(torch.from_numpy(currents), record_membrane=True)
    ones = np.ones(20)
    node = nir.IF(r=ones, v_threshold=ones, v_reset=0 * ones) if kind == "IF" else \
        nir.LIF(tau=2 * ones, r=ones, v_leak=0 * ones, v_threshold=ones, v_reset=0 * ones)
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([20])}), "n": node,
                                "output": nir.Output(output_type={"output": np.array([20])})},
                         edges=[("input", "n"), ("n", "output")])
    rec = NIRReferenceTarget().run(graph, currents, record_states=True)
    assert spikes.sum() > 100
    np.testing.assert_array_equal(rec.outputs["n"][0], spikes.numpy())
    np.testing.assert_allclose(rec.states["n.v"][0], v.numpy(), rtol=0, atol=1e-12)


PARAMETER_RANGES = {"r": (0.5, 2), "v_threshold": (0.5, 1.5), "v_reset": (-0.3, 0.2), "tau": (1.5, 7),
                    "v_leak": (-0.2, 0.2), "tau_syn": (1.5, 5), "tau_mem": (2, 9), "w_in": (0.5, 2)}


@pytest.mark.parametrize("node_type", list(eq.NEURONS), ids=lambda t: t.__name__)
def test_registry_steps_tensors_to_the_same_bits_as_arrays(node_type):
    """The ONNX lowering traces the registry's steps on torch tensors: the
    same operations in the same order give the same float64 bits (dt = 0.3
    is not a binary fraction, so a reordering would show)."""
    import torch

    neuron = eq.NEURONS[node_type]
    assert set(neuron.params) <= {f.name for f in dataclasses.fields(node_type)}
    spiking = issubclass(node_type, (nir.IF, nir.LIF, nir.CubaLIF))
    assert neuron.spiking == spiking == issubclass(node_type, eq.SPIKING_TYPES)
    rng = np.random.default_rng(0)
    p = SimpleNamespace(**{k: rng.uniform(*PARAMETER_RANGES[k], 6) for k in neuron.params})
    p_torch = SimpleNamespace(**{k: torch.from_numpy(v) for k, v in vars(p).items()})
    dt = 0.3
    state = {var: np.zeros((3, 6)) for var in neuron.states}
    state_torch = {var: torch.zeros(3, 6, dtype=torch.float64) for var in neuron.states}
    outputs = []
    for _ in range(20):
        current = rng.uniform(-1, 3, (3, 6))
        out, state = neuron.step(state, current, p, dt)
        out_torch, state_torch = neuron.step(state_torch, torch.from_numpy(current), p_torch,
                                             torch.tensor(dt, dtype=torch.float64))
        np.testing.assert_array_equal(out_torch.numpy(), out)
        for var in neuron.states:
            np.testing.assert_array_equal(state_torch[var].numpy(), state[var])
        outputs.append(out)
    if neuron.spiking:
        assert 0 < np.mean(outputs) < 1
