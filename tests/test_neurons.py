"""The snnTorch neurons against SPEC §2, step by step, with hand-computed values."""
import math

import pytest
import torch
from snntorch import surrogate

from fer2neuro.model.neurons import IFNeuron, LIFNeuron


def run(neuron, currents):
    x = torch.tensor(currents, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    spikes, v = neuron.double()(x, record_membrane=True)
    return spikes.squeeze(1).tolist(), v.squeeze(1).tolist()


def test_if_integrates_and_hard_resets():
    # v' = v + I; spike if v' > 1; v = 0 after a spike.
    spikes, v = run(IFNeuron(), [0.4, 0.4, 0.4, 0.3, 1.5, -0.5, 0.2])
    assert spikes == [0, 0, 1, 0, 1, 0, 0]
    assert v == pytest.approx([0.4, 0.8, 0.0, 0.3, 0.0, -0.5, -0.3], abs=1e-15)


def test_if_threshold_is_strict():
    # v' == threshold exactly does not spike (strict >); 0.5 + 0.5 == 1.0 in binary.
    spikes, v = run(IFNeuron(), [0.5, 0.5, 0.25])
    assert spikes == [0, 0, 1]
    assert v == [0.5, 1.0, 0.0]


def test_lif_decay_input_form():
    # tau = 2: v' = v + (I - v) / 2
    currents = [1.0, 1.0, 3.0, 0.0, 2.5, 2.5]
    spikes, v = run(LIFNeuron(tau=2.0), currents)
    expected_v, expected_s, vm = [], [], 0.0
    for i in currents:
        vp = vm + (i - vm) / 2.0
        s = 1 if vp > 1.0 else 0
        vm = 0.0 if s else vp
        expected_v.append(vm)
        expected_s.append(s)
    # hand-computed: 0.5, 0.75, 1.875 -> spike -> 0, 0, 1.25 -> spike -> 0, 1.25 -> spike -> 0
    assert expected_s == [0, 0, 1, 0, 1, 1]
    assert spikes == expected_s
    assert v == pytest.approx(expected_v, abs=1e-15)


def test_lif_exact_threshold_does_not_spike():
    # 2.0 from rest: v' = 0 + (2 - 0)/2 = 1.0, not > 1.0
    spikes, v = run(LIFNeuron(tau=2.0), [2.0, 0.0])
    assert spikes == [0, 0]
    assert v == [1.0, 0.5]


def test_lif_other_tau():
    spikes, v = run(LIFNeuron(tau=4.0), [4.0, 4.0, 4.0])
    # 1.0 (no spike), 1.0 + (4-1)/4 = 1.75 -> spike, 0 + 4/4 = 1.0 (no spike)
    assert spikes == [0, 1, 0]
    assert v == pytest.approx([1.0, 0.0, 1.0])


def test_constant_current_equals_repeated_current():
    neuron = IFNeuron().double()
    current = torch.tensor([[0.3, 0.7, 1.2]], dtype=torch.float64)
    held = neuron(current, steps=5)
    repeated = neuron(current.expand(5, 1, 3).clone())
    assert torch.equal(held, repeated.squeeze(1).unsqueeze(1))
    assert held.squeeze(1).sum(0).tolist() == [1.0, 2.0, 5.0]


def test_state_starts_at_zero_for_every_call():
    neuron = IFNeuron().double()
    x = torch.full((3, 1), 0.6, dtype=torch.float64)
    first = neuron(x)
    second = neuron(x)
    assert torch.equal(first, second)


def test_float64_in_float64_out():
    neuron = LIFNeuron().double()
    spikes = neuron(torch.ones(2, 3, dtype=torch.float64) * 5)
    assert spikes.dtype == torch.float64


def test_arctan_surrogate_gradient():
    # d s / d v = alpha / 2 / (1 + (pi/2 * alpha * x)^2), alpha = 2, x = v - threshold
    neuron = IFNeuron().double()
    for v0 in (0.2, 1.0, 1.3, 2.5):
        x = torch.tensor([[v0]], dtype=torch.float64, requires_grad=True)
        spikes = neuron(x)  # one step from rest: v' = v0
        spikes.sum().backward()
        u = v0 - 1.0
        expected = 2.0 / 2 / (1 + (math.pi / 2 * 2.0 * u) ** 2)
        # the hard reset (v = v' - s * v') does not feed back into the spike of step 0
        assert x.grad.item() == pytest.approx(expected, rel=1e-12)


def test_uses_snntorch_atan():
    neuron = IFNeuron()
    # the spike function is snnTorch's own ATan, not a re-implementation
    assert neuron.leaky.spike_grad.__qualname__ == surrogate.atan(alpha=2.0).__qualname__
    assert neuron.leaky.reset_mechanism == "zero"
