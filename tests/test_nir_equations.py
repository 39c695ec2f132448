"""The NIR reference target's forward-Euler neuron equations against values
computed by hand (binary fractions, so every value is exact in float64)."""
import nir
import numpy as np
import pytest

from fer2neuro.targets.nir_reference import NIRReferenceTarget


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
