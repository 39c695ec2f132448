"""The ONNX lowering of a NIR graph (fer2neuro/lowering/onnx_graph.py), run
by onnxruntime, against the NIR reference target: in float64 the same spikes
in every spiking node and the same membranes to rounding, for an exported
model and for hand-built graphs at dt != 1."""
import json

import nir
import numpy as np
import onnxruntime as ort
import pytest

from fer2neuro.errors import TargetError
from fer2neuro.exporters.nir_export import model_to_nir
from fer2neuro.lowering.onnx_graph import nir_to_onnx, onnx_metadata
from fer2neuro.targets import get_target

T = 4


def run_onnx(proto, x: np.ndarray, direct: bool, dtype=np.float64) -> dict[str, np.ndarray]:
    """x (B, T, *input_shape) -> every output of the model by name."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    values = session.run(None, {"input": (x[:, 0] if direct else x).astype(dtype)})
    return dict(zip([o.name for o in proto.graph.output], values))


def assert_equals_reference(graph, x, *, direct: bool, dt: float = 1.0):
    """Spikes equal and membranes within 1e-12 of the reference; every
    spiking node fires. Returns the ONNX model."""
    proto = nir_to_onnx(graph, timesteps=x.shape[1], direct=direct, dt=dt, membranes=True)
    out = run_onnx(proto, x, direct)
    ref = get_target("nir").run(graph, x, dt=dt, record="all", record_states=True)
    layers = json.loads(onnx_metadata(proto)["layers"])
    assert layers == list(ref.spiking)
    for name in layers:
        assert out[name].sum() > 0, f"{name} silent"
        np.testing.assert_array_equal(out[name], ref.outputs[name], err_msg=name)
    states = [n for n in out if "." in n]
    assert states and set(states) == set(ref.states)
    for name in states:
        np.testing.assert_allclose(out[name], ref.states[name], rtol=0, atol=1e-12, err_msg=name)
    return proto, out, ref


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "poisson"])
def test_exported_model_equals_the_reference(active_small_model, make_probe_images, direct):
    graph = model_to_nir(active_small_model, encoder="direct" if direct else "poisson")
    images = make_probe_images(4).numpy()
    if direct:
        x = np.repeat(images[:, None], T, axis=1)
    else:
        x = (np.random.default_rng(0).uniform(size=(4, T, 1, 48, 48)) < images[:, None]).astype(np.float64)
    proto, _, _ = assert_equals_reference(graph, x, direct=direct)
    meta = onnx_metadata(proto)
    assert (meta["encoder"], meta["timesteps"], meta["dt"], meta["precision"], meta["preset"]) == \
        ("direct" if direct else "poisson", str(T), "1.0", "float64", "small")
    assert json.loads(meta["output_nodes"]) == {"output": "lif_out"}
    assert json.loads(meta["input_shape"]) == [1, 48, 48]
    assert json.loads(meta["class_names"])[3] == "happy"
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == (["batch", 1, 48, 48] if direct else ["batch", T, 1, 48, 48])
    assert not {"Conv", "AveragePool"} & {n.op_type for n in proto.graph.node}   # none in float64


def full(shape, value):
    return np.full(shape, value, dtype=np.float64)


def hand_built():
    """Conv2d (padding 'same') -> CubaLIF (per-neuron parameters) ->
    AvgPool2d -> Flatten -> Affine, summed with a Linear from the input into
    a LIF with a leak and a reset potential; a Scale -> Threshold branch and
    an LI (analog) output."""
    rng = np.random.default_rng(3)
    shape = (4, 6, 6)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 6, 6])}),
        "conv": nir.Conv2d(input_shape=(6, 6), weight=rng.normal(0.4, 0.5, (4, 2, 3, 3)), bias=full(4, 0.1),
                           stride=1, padding="same", dilation=1, groups=1),
        "cuba": nir.CubaLIF(tau_syn=rng.uniform(1.5, 3, shape), tau_mem=rng.uniform(2, 5, shape), r=full(shape, 1.5),
                            v_leak=full(shape, 0.05), v_threshold=rng.uniform(0.6, 1.2, shape),
                            v_reset=full(shape, -0.1), w_in=full(shape, 2.0)),
        "avg": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flatten": nir.Flatten(input_type={"input": np.array([4, 3, 3])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=rng.normal(0.02, 0.25, (5, 36)), bias=rng.normal(0.1, 0.1, 5)),
        "flat_in": nir.Flatten(input_type={"input": np.array([2, 6, 6])}, start_dim=0, end_dim=-1),
        "skip": nir.Linear(weight=rng.normal(0.02, 0.05, (5, 72))),
        "lif": nir.LIF(tau=rng.uniform(1.5, 4, 5), r=full(5, 2.0), v_leak=full(5, 0.1), v_threshold=full(5, 1.0),
                       v_reset=full(5, 0.2)),
        "out": nir.Output(output_type={"output": np.array([5])}),
        "scale": nir.Scale(scale=rng.uniform(0.5, 1.5, 5)),
        "theta": nir.Threshold(threshold=full(5, 1.0)),
        "out_theta": nir.Output(output_type={"output": np.array([5])}),
        "li": nir.LI(tau=full(5, 3.0), r=full(5, 1.0), v_leak=full(5, 0.0)),
        "out_li": nir.Output(output_type={"output": np.array([5])}),
    }
    edges = [("input", "conv"), ("conv", "cuba"), ("cuba", "avg"), ("avg", "flatten"), ("flatten", "fc"),
             ("fc", "lif"), ("input", "flat_in"), ("flat_in", "skip"), ("skip", "lif"), ("lif", "out"),
             ("fc", "scale"), ("scale", "theta"), ("theta", "out_theta"), ("lif", "li"), ("li", "out_li")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


@pytest.mark.parametrize("direct", [True, False], ids=["constant", "sequence"])
def test_hand_built_graph_at_half_step_equals_the_reference(direct):
    rng = np.random.default_rng(1)
    steps = 8
    if direct:
        x = np.repeat(rng.uniform(0, 1, (3, 1, 2, 6, 6)), steps, axis=1)
    else:
        x = rng.uniform(0, 1.5, (3, steps, 2, 6, 6))
    proto, out, ref = assert_equals_reference(hand_built(), x, direct=direct, dt=0.5)
    assert list(out)[:4] == ["cuba", "lif", "theta", "li"]      # spiking nodes, then the analog output's source
    np.testing.assert_allclose(out["li"], ref.outputs["out_li"], rtol=0, atol=1e-12)
    assert {"cuba.i", "cuba.v", "lif.v", "li.v"} <= set(out)
    meta = onnx_metadata(proto)
    assert meta["dt"] == "0.5" and "preset" not in meta
    assert json.loads(meta["output_nodes"]) == {"out": "lif", "out_theta": "theta", "out_li": "li"}
    ops = {n.op_type for n in proto.graph.node}
    assert "MatMul" in ops and not {"Conv", "AveragePool"} & ops


def grouped_conv_graph():
    """A grouped, strided, dilated Conv2d -> IF -> padded SumPool2d -> I ->
    Flatten -> Linear -> CubaLI (analog output)."""
    rng = np.random.default_rng(4)
    shape = (6, 5, 5)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([4, 7, 7])}),
        "conv": nir.Conv2d(input_shape=(7, 7), weight=rng.normal(0.3, 0.4, (6, 2, 3, 3)), bias=full(6, 0.05),
                           stride=2, padding=2, dilation=2, groups=2),
        "if": nir.IF(r=full((6, 4, 4), 1.0), v_threshold=full((6, 4, 4), 1.0), v_reset=full((6, 4, 4), 0.0)),
        "sum": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([1, 1]), padding=np.array([1, 1])),
        "integrator": nir.I(r=rng.uniform(0.5, 1.5, shape)),
        "flatten": nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1),
        "fc": nir.Linear(weight=rng.normal(0, 0.1, (5, 150))),
        "cuba": nir.CubaLI(tau_syn=full(5, 2.0), tau_mem=full(5, 3.0), r=full(5, 1.0), v_leak=full(5, 0.0),
                           w_in=full(5, 1.0)),
        "output": nir.Output(output_type={"output": np.array([5])}),
    }
    return nir.NIRGraph(nodes=nodes, edges=list(zip(list(nodes)[:-1], list(nodes)[1:])), type_check=False)


def conv1d_graph():
    rng = np.random.default_rng(5)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 9])}),
        "conv": nir.Conv1d(input_shape=9, weight=rng.normal(0.4, 0.4, (3, 2, 3)), stride=2, padding=1, dilation=1,
                           groups=1, bias=full(3, 0.1)),
        "if": nir.IF(r=full((3, 5), 1.0), v_threshold=full((3, 5), 1.0), v_reset=full((3, 5), 0.0)),
        "output": nir.Output(output_type={"output": np.array([3, 5])}),
    }
    return nir.NIRGraph(nodes=nodes, edges=list(zip(list(nodes)[:-1], list(nodes)[1:])), type_check=False)


@pytest.mark.parametrize("make", [grouped_conv_graph, conv1d_graph])
def test_other_nodes_and_neurons_equal_the_reference(make):
    graph = make()
    shape = tuple(graph.nodes["input"].input_type["input"])
    x = np.random.default_rng(2).uniform(0, 1, (2, 5, *shape))
    proto, out, ref = assert_equals_reference(graph, x, direct=False, dt=0.25)
    for name, source in json.loads(onnx_metadata(proto)["output_nodes"]).items():
        np.testing.assert_allclose(out[source], ref.outputs[name], rtol=0, atol=1e-12)


def test_the_time_step_matters():
    """dt = 0.5 is not dt = 1 relabelled: the lowered graph integrates with it."""
    x = np.random.default_rng(1).uniform(0, 1.5, (2, 6, 2, 6, 6))
    half = run_onnx(nir_to_onnx(hand_built(), timesteps=6, direct=False, dt=0.5), x, direct=False)
    one = run_onnx(nir_to_onnx(hand_built(), timesteps=6, direct=False, dt=1.0), x, direct=False)
    assert not np.array_equal(half["cuba"], one["cuba"])


def test_float32_uses_onnx_conv_and_pooling(active_small_model, make_probe_images):
    graph = hand_built()
    x = np.random.default_rng(1).uniform(0, 1.5, (3, 6, 2, 6, 6))
    proto = nir_to_onnx(graph, timesteps=6, direct=False, dt=0.5, precision="float32")
    assert {"Conv", "AveragePool"} <= {n.op_type for n in proto.graph.node}
    assert onnx_metadata(proto)["precision"] == "float32"
    out = run_onnx(proto, x, direct=False, dtype=np.float32)
    ref = get_target("nir").run(graph, x, dt=0.5)
    for name in ("cuba", "lif", "theta"):
        assert out[name].dtype == np.float32
        assert np.mean(out[name] == ref.outputs[name]) > 0.99, name      # float32 rounding flips rare ties
    small = model_to_nir(active_small_model)
    pooled = nir_to_onnx(small, timesteps=2, direct=True, precision="float32")
    images = make_probe_images(2).numpy()
    spikes = run_onnx(pooled, np.repeat(images[:, None], 2, axis=1), direct=True, dtype=np.float32)
    reference = get_target("nir").run(small, np.repeat(images[:, None], 2, axis=1))
    assert np.mean(spikes["pool1"] == reference.outputs["pool1"]) > 0.999          # sum pool as a depthwise Conv


def test_one_line_errors():
    graph = hand_built()
    graph.nodes["delay"] = nir.Delay(delay=full(5, 1.0))
    graph.edges.append(("lif", "delay"))
    with pytest.raises(TargetError, match=r"^node 'delay' \(Delay\) cannot be lowered to ONNX \(supported: "):
        nir_to_onnx(graph, timesteps=2, direct=False)
    graph = hand_built()
    graph.nodes["skip"] = nir.Linear(weight=np.ones((5, 70)))
    with pytest.raises(TargetError, match=r"^node 'skip' \(Linear\) cannot take input of shape \(72,\)"):
        nir_to_onnx(graph, timesteps=2, direct=False)
    graph = hand_built()
    graph.nodes["lif"] = nir.LIF(tau=full(5, np.inf), r=full(5, 1.0), v_leak=full(5, 0.0),
                                 v_threshold=full(5, 1.0), v_reset=full(5, 0.0))
    with pytest.raises(TargetError, match="parameter tau is not finite"):      # the reference's own checks
        nir_to_onnx(graph, timesteps=2, direct=False)
