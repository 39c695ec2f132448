"""Spyx as an interop peer: its runner, its dialect and ``--for spyx`` files,
checked against the real Spyx (``.peers/spyx``, or ``$FER2NEURO_PEERS/spyx``)
and its own spikes. Skipped when that environment is not installed (the
``peer`` fixture, conftest.py and tests/interop_support.py).

Each test makes one runner call (JAX starts in a few seconds).
"""
from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

from fer2neuro.model.architecture import two_conv_template
from fer2neuro.data import FER2013_CLASSES
from fer2neuro.errors import GraphError
from fer2neuro.interop.for_peer import spyx as for_spyx
from fer2neuro.interop.peers import export_peer, run_peer
from fer2neuro.interop.runners.protocol import KINDS
from fer2neuro.model.config import preset_config
from fer2neuro.model.network import build_model
from fer2neuro.nirgraph import dialects
from fer2neuro.nirgraph import equations as eq
from fer2neuro.nirgraph.flat import flatten_graph
from fer2neuro.targets import get_target
from fer2neuro.exporters.nir_export import model_to_nir

PEER = "spyx"                   # the peer the ``peer`` fixture finds


@torch.no_grad()
def small_fer2neuro_graph(timesteps: int = 12) -> nir.NIRGraph:
    """fer2neuro's network at 8x8 (so that JAX compiles it in seconds), every
    layer spiking on uniform images (the fc weights scaled as conftest's
    ``active_model`` does)."""
    torch.manual_seed(0)
    config = preset_config("small", class_names=tuple(FER2013_CLASSES), blocks=two_conv_template(4, (32, 16)),
                           image_size=8, timesteps=timesteps)
    model = build_model(config).double().eval()
    probe = torch.rand((8, 1, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for fc, lif in (("fc1", "lif1"), ("fc2", "lif2"), ("fc3", "lif_out")):
        for _ in range(40):
            if model.record(probe)[lif].mean() >= 0.1:
                break
            getattr(model, fc).weight.mul_(1.4)
    return model_to_nir(model)


def spiking_nodes(graph: nir.NIRGraph) -> list[str]:
    flat = flatten_graph(graph)
    return [n for n, node in flat.nodes.items() if isinstance(node, eq.SPIKING_TYPES)]


def test_runner_runs_a_fer2neuro_graph(peer, interop, tmp_path):
    """Spyx's importer loads and runs fer2neuro's file; every spiking node
    comes back in NIR's layout, and the spyx dialect on the nir target
    reproduces every one of them."""
    graph = small_fer2neuro_graph()
    path = tmp_path / "model.nir"
    nir.write(path, graph)
    x = interop.images(3, 12, size=8)
    result = run_peer("spyx", path, x, dt=1.0)
    assert result.error is None, result.error
    assert result.loaded and result.ran
    ours = interop.nir_spikes(graph, x, 1.0)
    assert set(result.spikes) == set(spiking_nodes(graph))
    for name, spikes in result.spikes.items():
        assert spikes.shape == ours[name].shape, name
        assert set(np.unique(spikes)) <= {0.0, 1.0}, name
        assert result.report["layers"][name].startswith("spyx.nn."), result.report["layers"]
    assert result.spikes["if1"].any()
    assert dialects.detect(graph) == "nir"                 # a fer2neuro file is never taken for Spyx's
    as_spyx = interop.nir_spikes(dialects.apply(graph, "spyx"), x, 1.0)
    assert interop.equal_shares(as_spyx, result.spikes) == {k: 1.0 for k in result.spikes}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_spyx_export_read_with_the_dialect(peer, interop, tmp_path, kind):
    """Spyx's own network of each kind, exported by Spyx: the spyx dialect on
    the nir target gives Spyx's own spikes in every spiking layer."""
    path = tmp_path / f"{kind}.nir"
    result, x = export_peer("spyx", kind, path, seed=0, samples=4, timesteps=20)
    assert result.error is None, result.error
    graph = nir.read(path)
    assert set(result.spikes) == set(spiking_nodes(graph))
    for name, spikes in result.spikes.items():
        assert 0.0 < spikes.mean() < 1.0, (name, spikes.mean())
    assert dialects.detect(graph) == "spyx"
    ours = interop.nir_spikes(dialects.apply(graph, "spyx"), x, 1.0)
    equal = interop.equal_shares(ours, result.spikes)
    # recurrent: Spyx feeds back the spikes of the same step (spyx/nn.py:532-534), which the dialect's
    # "same step" back edges carry (its neurons decide their spikes before their input)
    assert equal == {k: 1.0 for k in result.spikes}
    if kind == "recurrent":         # the ONNX lowering carries the same-step feedback too
        onnx = get_target("onnx").open(dialects.apply(graph, "spyx")).run(x, dt=1.0, record="spikes")
        assert interop.equal_shares({k: onnx.outputs[k] for k in result.spikes}, result.spikes) == equal


def test_for_spyx_refuses_fer2neuro_neurons_in_one_line():
    graph = small_fer2neuro_graph()
    with pytest.raises(GraphError) as info:
        for_spyx.adapt(graph)
    message = str(info.value)
    assert "\n" not in message and "'if1'" in message


def threshold_graph(seed: int = 0) -> nir.NIRGraph:
    """A graph of fer2neuro's node types whose spiking nodes Spyx can run as
    fer2neuro does: stateless Thresholds and a max-pool IF. Its weights are
    float32 values: Spyx's importer holds weights in float32 (``adapt``'s
    docstring), which would otherwise be a cause of its own."""
    generator = np.random.default_rng(seed)

    class rng:                                              # noqa: N801 - a float32-valued normal()
        @staticmethod
        def normal(mean, std, shape):
            return generator.normal(mean, std, shape).astype(np.float32).astype(np.float64)

    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 6, 6])}),
        "conv": nir.Conv2d(input_shape=(6, 6), weight=rng.normal(0, 0.5, (3, 2, 3, 3)), stride=1, padding=1,
                           dilation=1, groups=1, bias=rng.normal(0, 0.1, 3)),
        "spikes": nir.Threshold(threshold=np.full((3, 6, 6), 0.3)),
        "pool1_sum": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "pool1": nir.IF(r=np.ones((3, 3, 3)), v_threshold=np.full((3, 3, 3), 0.5), v_reset=np.zeros((3, 3, 3))),
        "flatten": nir.Flatten(input_type={"input": np.array([3, 3, 3])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=rng.normal(0, 0.5, (5, 27)), bias=rng.normal(0, 0.1, 5)),
        "out": nir.Threshold(threshold=np.full(5, 0.2)),
        "output": nir.Output(output_type={"output": np.array([5])}),
    }
    order = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), metadata={"dt": 1.0})


def test_for_spyx_file_runs_in_spyx_as_in_fer2neuro(peer, interop, tmp_path):
    """The adapted file in Spyx equals fer2neuro's nir target on the
    original, in every spiking layer."""
    graph = threshold_graph()
    x = np.random.default_rng(1).random((3, 6, 2, 6, 6))
    ours = interop.nir_spikes(graph, x, 1.0)
    path = tmp_path / "for-spyx.nir"
    nir.write(path, for_spyx.adapt(graph))
    result = run_peer("spyx", path, x, dt=1.0)
    assert result.error is None, result.error
    theirs = {k: v for k, v in result.spikes.items() if k in ours}
    assert set(theirs) == set(spiking_nodes(graph))
    assert all(0.0 < v.mean() < 1.0 for v in theirs.values())
    assert interop.equal_shares(ours, theirs) == {k: 1.0 for k in theirs}


# --- the dialect's arithmetic, without the peer ----------------------------------

def test_fma_rounds_once_like_a_fused_multiply_add():
    """``fma`` against the exact product-sum rounded once (Python's
    fractions), on random, cancelling and tie-making triples, numpy and torch."""
    from fractions import Fraction

    from fer2neuro.nirgraph.dialects.spyx import fma

    rng = np.random.default_rng(0)
    a = rng.random(4000).astype(np.float32).astype(np.float64)
    b = rng.normal(0, 3, 4000)
    c = np.concatenate([rng.normal(0, 3, 2000), -(a[2000:] * b[2000:])])          # the second half cancels
    tie_a, tie_b = 1 + 2.0 ** -26, 2.0 ** -53 * (1 - 2.0 ** -26 + 2.0 ** -52)      # a*b = 2^-53 (1 + 2^-78)
    a = np.append(a, [tie_a, -tie_a]); b = np.append(b, [tie_b, tie_b]); c = np.append(c, [1.0, -1.0])
    exact = np.array([float(Fraction(x) * Fraction(y) + Fraction(z)) for x, y, z in zip(a, b, c)])
    assert np.array_equal(fma(a, b, c), exact)
    assert np.array_equal(fma(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)).numpy(), exact)


def test_dialect_steps_are_array_generic():
    """Every spyx step gives the same bits on numpy arrays and torch tensors."""
    from types import SimpleNamespace

    from fer2neuro.nirgraph.dialects.spyx import NEURONS

    rng = np.random.default_rng(1)
    shape = (3, 5)
    params = {"tau": 1.0 + rng.random(5) * 4, "tau_mem": 1.0 + rng.random(5) * 4, "tau_syn": 1.0 + rng.random(5),
              "v_threshold": np.full(5, 1.0)}
    params["r"] = 1.0 - 1.0 / params["tau"]
    params["w_in"] = 1.0 - 1.0 / params["tau_syn"]
    for kind, neuron in NEURONS.items():
        p_np = SimpleNamespace(**{k: params[k] for k in neuron.params})
        p_t = SimpleNamespace(**{k: torch.from_numpy(params[k]) for k in neuron.params})
        s_np = {v: np.zeros(shape) for v in neuron.states}
        s_t = {v: torch.zeros(shape, dtype=torch.float64) for v in neuron.states}
        for _ in range(6):
            current = rng.normal(0.6, 0.8, shape)
            out_np, s_np = neuron.step(s_np, current, p_np, 1.0)
            out_t, s_t = neuron.step(s_t, torch.from_numpy(current), p_t, torch.tensor(1.0, dtype=torch.float64))
            assert np.array_equal(np.asarray(out_np), out_t.numpy()), kind.__name__
            for v in neuron.states:
                assert np.array_equal(s_np[v], s_t[v].numpy()), (kind.__name__, v)


def test_dialect_keeps_spyx_beta_exactly():
    """A LIF as Spyx writes it (r = beta, tau = dt / (1 - beta), float32):
    after the rewrite the step's decay is that beta, bit for bit, also where
    no float64 tau gives it as 1 - dt / tau."""
    from fer2neuro.nirgraph.dialects.spyx import beta_of

    beta = np.random.default_rng(2).random(2000).astype(np.float32)
    tau = (np.float32(1.0) / (np.float32(1.0) - beta)).astype(np.float32)
    nodes = {"input": nir.Input(input_type={"input": np.array([2000])}),
             "layer_0": nir.LIF(tau=tau, r=beta, v_leak=np.zeros(2000, np.float32),
                                v_threshold=np.ones(2000, np.float32)),
             "output": nir.Output(output_type={"output": np.array([2000])})}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "layer_0"), ("layer_0", "output")])
    assert dialects.detect(graph) == "spyx"
    node = dialects.apply(graph, "spyx").nodes["layer_0"]
    assert np.array_equal(beta_of(np.asarray(node.r), np.asarray(node.tau), 1.0), beta.astype(np.float64))
    # why r carries it: for some of these betas no float64 tau gives 1 - dt / tau == beta
    assert ((1.0 - 1.0 / np.asarray(node.tau, dtype=np.float64)) != beta).any()


def test_detect_never_takes_a_fer2neuro_file_for_spyx():
    graph = small_fer2neuro_graph()
    assert not dialects.DIALECTS["spyx"].detect(graph)
    assert dialects.detect(graph) == "nir"
