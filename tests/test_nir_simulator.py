"""The NIR reference target as a graph runner: batching, recording, graphs
from other tools, subgraphs, and its one-line errors."""
import nir
import numpy as np
import pytest
import snntorch as snn
import torch

from fer2neuro.errors import DataError, TargetError
from fer2neuro.nirgraph.file import read_graph, write_graph
from fer2neuro.targets import get_target
from fer2neuro.targets.nir_reference import NIRReferenceTarget


def ones(n):
    return np.ones(n)


def small_graph(**extra_nodes):
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "fc": nir.Affine(weight=np.array([[1.0, 0.5, 0], [0, 1, -1], [0.25, 0.25, 0.25]]),
                              bias=np.array([0.1, 0, 0.2])),
             "lif": nir.LIF(tau=2 * ones(3), r=ones(3), v_leak=0 * ones(3), v_threshold=ones(3)),
             "output": nir.Output(output_type={"output": np.array([3])})}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])


def test_registry():
    assert isinstance(get_target("nir"), NIRReferenceTarget)
    with pytest.raises(TargetError, match="unknown target 'loihi9'"):
        get_target("loihi9")


def test_batch_equals_samples_one_by_one_and_chunks():
    x = np.random.default_rng(0).uniform(0, 3, size=(5, 6, 3))
    target = NIRReferenceTarget()
    whole = target.run(small_graph(), x)
    chunked = target.run(small_graph(), x, batch_size=2)
    assert whole.output.shape == (5, 6, 3) and whole.output.dtype == np.uint8
    assert whole.output.sum() > 0
    for b in range(5):
        single = target.run(small_graph(), x[b])                # (T, 3): one sample
        np.testing.assert_array_equal(single.output[0], whole.output[b])
    for name in whole.outputs:
        np.testing.assert_array_equal(chunked.outputs[name], whole.outputs[name])


def test_records_every_node_when_asked():
    x = np.ones((2, 4, 3))
    rec = NIRReferenceTarget().run(small_graph(), x, record="all", record_states=True)
    assert set(rec.outputs) == {"input", "fc", "lif", "output"}
    assert rec.spiking == ("lif",)
    np.testing.assert_allclose(rec.outputs["fc"][0, 0], [1.6, 0, 0.95])
    assert rec.states["lif.v"].shape == (2, 4, 3)
    with pytest.raises(DataError, match="cannot record nope"):
        NIRReferenceTarget().run(small_graph(), x, record=["nope"])


@pytest.mark.filterwarnings("ignore:nirtorch.extract_nir_graph is being deprecated")
def test_graph_from_snntorch_export_to_nir(tmp_path):
    """A graph another tool wrote: snnTorch's exporter (dt = 1e-4, tau and r
    derived from beta). Run with that dt it reproduces snnTorch's spikes."""
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(0)
    # Per-neuron beta/threshold: with scalars snnTorch's graph fails NIR's type check.
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 5),
        snn.Leaky(beta=torch.full((5,), 0.9), threshold=torch.ones(5), init_hidden=True,
                  reset_mechanism="zero", reset_delay=False),
        torch.nn.Linear(5, 4),
        snn.Leaky(beta=torch.full((4,), 0.8), threshold=torch.ones(4), init_hidden=True, output=True,
                  reset_mechanism="zero", reset_delay=False),
    )
    with torch.no_grad():        # excitatory weights, so that both layers spike
        net[0].weight.abs_()
        net[2].weight.abs_().mul_(2)
    graph = export_to_nir(net, torch.zeros(1, 6), ignore_dims=[0])
    write_graph(graph, tmp_path / "snntorch.nir")
    graph = read_graph(tmp_path / "snntorch.nir")
    assert {type(n).__name__ for n in graph.nodes.values()} == {"Input", "Affine", "LIF", "Output"}

    x = torch.rand(3, 30, 6) * 2
    spikes, hidden = [], []
    with torch.no_grad():
        for layer in net:
            if hasattr(layer, "reset_hidden"):
                layer.reset_hidden()
        for t in range(30):
            h = net[1](net[0](x[:, t]))
            hidden.append(h.clone())
            spk, _ = net[3](net[2](h))
            spikes.append(spk)
    want = torch.stack(spikes, 1).numpy()
    want_hidden = torch.stack(hidden, 1).numpy()
    assert want.sum() > 10 and want_hidden.sum() > 10

    rec = NIRReferenceTarget().run(graph, x.numpy(), dt=1e-4, record="spikes")
    np.testing.assert_array_equal(rec.output, want)
    lifs = [n for n in rec.spiking]
    np.testing.assert_array_equal(rec.outputs[lifs[0]], want_hidden)
    # With the default dt = 1 the same graph means something else entirely.
    assert not np.array_equal(NIRReferenceTarget().run(graph, x.numpy()).output, want)


def test_subgraph_is_inlined():
    inner = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([3])}),
                                "lif": nir.LIF(tau=2 * ones(3), r=ones(3), v_leak=0 * ones(3),
                                               v_threshold=ones(3)),
                                "out": nir.Output(output_type={"output": np.array([3])})},
                         edges=[("in", "lif"), ("lif", "out")])
    outer = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([3])}),
                                "fc": small_graph().nodes["fc"], "block": inner,
                                "output": nir.Output(output_type={"output": np.array([3])})},
                         edges=[("input", "fc"), ("fc", "block"), ("block", "output")])
    x = np.random.default_rng(1).uniform(0, 3, size=(2, 5, 3))
    flat = NIRReferenceTarget().run(small_graph(), x).output
    nested = NIRReferenceTarget().run(outer, x)
    assert nested.spiking == ("block.lif",)
    np.testing.assert_array_equal(nested.output, flat)


def test_inputs_of_two_edges_are_summed():
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}),
                                "a": nir.Scale(scale=np.array([1.0, 2.0])),
                                "b": nir.Scale(scale=np.array([3.0, 4.0])),
                                "if": nir.IF(r=ones(2), v_threshold=10 * ones(2)),
                                "output": nir.Output(output_type={"output": np.array([2])})},
                         edges=[("input", "a"), ("input", "b"), ("a", "if"), ("b", "if"), ("if", "output")])
    rec = NIRReferenceTarget().run(graph, np.ones((1, 3, 2)), record_states=True)
    np.testing.assert_array_equal(rec.states["if.v"][0, :, 0], [4, 8, 0])   # 12 > 10: spike, reset
    assert rec.output[0, :, 1].tolist() == [0, 1, 0]                                # 6, 12 > 10 -> reset, 6


def test_unsupported_node_is_named():
    graph = small_graph()
    graph.nodes["fc"] = nir.Delay(delay=np.ones(3))
    with pytest.raises(TargetError, match=r"node 'fc' \(Delay\) is not supported by the nir target"):
        NIRReferenceTarget().run(graph, np.ones((1, 2, 3)))


def test_a_cycle_runs_on_nir_and_where_a_chain_target_can_hold_it():
    """snnTorch's RLeaky exports a recurrent subgraph: a cycle. The nir target
    runs it (the back edge carries the previous step, tests/test_nir_recurrent.py);
    a chain target runs it as a recurrent synapse once the neuron has an input
    synapse, and says what is missing where it has none."""
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "lif": nir.LIF(tau=2 * ones(3), r=ones(3), v_leak=0 * ones(3), v_threshold=ones(3)),
             "w_rec": nir.Linear(weight=0.6 * np.eye(3)),
             "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    x = (np.random.default_rng(0).uniform(size=(1, 8, 3)) < 0.7).astype(np.float64)    # spikes
    assert NIRReferenceTarget().run(graph, x).outputs["lif"].shape == (1, 8, 3)
    with pytest.raises(TargetError, match=r"node 'lif' \(LIF\) has no synapse before it"):
        get_target("loihi").run(graph, x)
    nodes["w_in"] = nir.Linear(weight=1.5 * np.eye(3))
    edges[0:1] = [("input", "w_in"), ("w_in", "lif")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    ref = NIRReferenceTarget().run(graph, x)
    assert ref.outputs["lif"].sum() > 0
    np.testing.assert_array_equal(get_target("loihi").run(graph, x).outputs["lif"], ref.outputs["lif"])


def test_bad_inputs_and_parameters():
    target = NIRReferenceTarget()
    with pytest.raises(DataError, match=r"shape \(2, 4\); the graph takes \(T, 3\)"):
        target.run(small_graph(), np.ones((2, 4)))
    with pytest.raises(DataError, match="NaN"):
        target.run(small_graph(), np.full((1, 2, 3), np.nan))
    with pytest.raises(DataError, match="no samples or no time steps"):
        target.run(small_graph(), np.ones((1, 0, 3)))
    with pytest.raises(DataError, match="dt must be > 0"):
        target.run(small_graph(), np.ones((1, 2, 3)), dt=0)
    graph = small_graph()
    graph.nodes["lif"] = nir.LIF(tau=2 * ones(4), r=ones(4), v_leak=0 * ones(4), v_threshold=ones(4))
    with pytest.raises(TargetError, match=r"node 'lif' \(LIF\): parameter tau has shape \(4,\) but the node "
                                          r"receives input of shape \(3,\)"):
        target.run(graph, np.ones((1, 2, 3)))
    infinite = small_graph()
    infinite.nodes["lif"] = nir.LIF(tau=np.full(3, np.inf), r=np.full(3, np.inf), v_leak=0 * ones(3),
                                    v_threshold=ones(3))
    with pytest.raises(TargetError, match=r"parameter tau is not finite \(snnTorch's export_to_nir writes"):
        target.run(infinite, np.ones((1, 2, 3)))
    dangling = small_graph()
    dangling.nodes["orphan"] = nir.Scale(scale=ones(3))
    with pytest.raises(TargetError, match=r"'orphan' \(Scale\) has no input edge"):
        target.run(dangling, np.ones((1, 2, 3)))
