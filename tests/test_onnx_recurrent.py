"""Recurrent NIR graphs on the ``onnx`` target: the lowering unrolls a graph
with back edges step by step, as the nir reference target runs it (a back
edge carries its source's output of the previous step, zero at t = 0), so
onnxruntime in float64 gives the nir target's spikes exactly."""
import nir
import numpy as np
import pytest

from fer2neuro.lowering.onnx_graph import check_graph, nir_to_onnx
from fer2neuro.nirgraph.flat import flatten_graph
from fer2neuro.targets import get_target


def same_as_nir(graph, x, dt, names):
    onnx_rec = get_target("onnx").run(graph, x, dt=dt, record_states=True)
    nir_rec = get_target("nir").run(graph, x, dt=dt, record_states=True)
    assert onnx_rec.spiking == nir_rec.spiking
    for name in nir_rec.spiking:
        np.testing.assert_array_equal(onnx_rec.outputs[name], nir_rec.outputs[name])
        assert onnx_rec.outputs[name].dtype == np.uint8
    np.testing.assert_array_equal(onnx_rec.output, nir_rec.output)
    assert set(onnx_rec.states) == set(nir_rec.states) and nir_rec.states
    for key in nir_rec.states:
        np.testing.assert_allclose(onnx_rec.states[key], nir_rec.states[key], rtol=0, atol=1e-12)
    for name in names:
        assert nir_rec.outputs[name].sum() > 0, name
    return onnx_rec


@pytest.mark.parametrize("dt", [1e-4, 0.5])
def test_braille_rnn_equals_the_nir_target(dt, H):
    graph, x = H.braille_like(dt), H.spikes_in(batch=4)
    rec = same_as_nir(graph, x, dt, ["lif1", "lif2"])
    assert rec.spiking == ("lif1", "lif2")
    # the recurrence matters: without it the spikes differ
    plain = get_target("onnx").run(H.braille_like(dt, rec_scale=0.0), x, dt=dt)
    assert not np.array_equal(plain.outputs["lif1"], rec.outputs["lif1"])


def test_braille_rnn_with_a_direct_input(H):
    dt = 0.5
    graph = H.braille_like(dt)
    x = np.repeat(np.random.default_rng(5).uniform(0, 1, (3, 1, H.N_IN)), 20, axis=1)
    same_as_nir(graph, x, dt, ["lif1"])


@pytest.mark.parametrize("via", ["self", "scale", "linear"])
def test_a_neuron_feeding_itself(via, H):
    scale = np.array([0.9, -0.6])
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}), "lif": H.lif(2),
             "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "lif"), ("lif", "output")]
    if via == "self":
        edges.append(("lif", "lif"))
    else:
        nodes["w"] = nir.Scale(scale=scale) if via == "scale" else nir.Linear(weight=np.diag(scale))
        edges += [("lif", "w"), ("w", "lif")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    x = np.random.default_rng(3).uniform(0.5, 2.5, (2, 30, 2))
    same_as_nir(graph, x, 1.0, ["lif"])


def test_a_two_neuron_cycle(H):
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "a": H.lif(3, tau=2.0), "b": H.lif(3, tau=3.0, threshold=0.5),
             "output": nir.Output(output_type={"output": np.array([3])})}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "a"), ("a", "b"), ("b", "a"), ("b", "output")],
                         type_check=False)
    x = np.random.default_rng(4).uniform(0, 2.2, (2, 25, 3))
    rec = same_as_nir(graph, x, 1.0, ["a", "b"])
    assert rec.spiking == ("a", "b")


def test_check_graph_accepts_cycles_and_orders_without_back_edges(H):
    flat = flatten_graph(H.braille_like(0.5))
    assert check_graph(flat) == ["input", "fc1", "lif1", "rec", "fc2", "lif2", "output"]
    get_target("onnx").check(H.braille_like(0.5))


def test_the_unrolled_model_holds_each_parameter_once(H):
    """Nodes are lowered once per step; their parameters are shared
    initializers, the same whatever the number of steps."""
    graph = H.braille_like(0.5)
    short = nir_to_onnx(graph, timesteps=2, direct=False, dt=0.5).graph.initializer
    long = nir_to_onnx(graph, timesteps=20, direct=False, dt=0.5).graph.initializer
    assert len(short) == len(long) > 0
    assert sum(i.ByteSize() for i in long) == sum(i.ByteSize() for i in short)


def test_inspect_says_the_onnx_target_runs_a_recurrent_graph(tmp_path, H):
    from click.testing import CliRunner

    from fer2neuro.cli import main
    from fer2neuro.nirgraph.file import write_graph

    write_graph(H.braille_like(0.5), tmp_path / "rnn.nir")
    inspected = CliRunner().invoke(main, ["inspect", str(tmp_path / "rnn.nir")], catch_exceptions=False)
    assert inspected.exit_code == 0, inspected.output
    lines = inspected.stdout.splitlines()
    assert any(line.split() == ["onnx", "yes"] for line in lines), inspected.stdout
    assert any(line.split() == ["nir", "yes"] for line in lines), inspected.stdout
