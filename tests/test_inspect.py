"""``fer2neuro inspect``: what a .nir graph, a netx network (or exported Lava
folder) and an exported .onnx model hold, and which targets run them."""
import json

import nir
import numpy as np
import pytest
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.exporters.nir_export import model_to_nir
from fer2neuro.lowering.lava_folder import write_artifact
from fer2neuro.nirgraph.describe import back_edges, summarise
from fer2neuro.nirgraph.file import write_graph
from fer2neuro.nirgraph.flat import flatten_graph
from fer2neuro.targets import target_names

LAVA_STYLE = ("lava", "lava-fixed", "loihi")
RNG = np.random.default_rng(5)


def invoke(*args):
    return CliRunner().invoke(main, ["inspect", *map(str, args)], catch_exceptions=False)


def inspect_json(path) -> dict:
    result = invoke(path, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def full(shape, value):
    return np.full(shape, float(value))


def cuba(n):
    return nir.CubaLIF(tau_syn=full(n, 4), tau_mem=full(n, 8), r=full(n, 1), v_leak=full(n, 0),
                       v_threshold=full(n, 1), v_reset=full(n, 0), w_in=full(n, 1))


def recurrent_graph(edge_order=None):
    """The NIR paper's Braille network: Affine -> CubaLIF, with a recurrent
    Affine from the CubaLIF back into it, -> Affine -> CubaLIF."""
    nodes = {"input": nir.Input(input_type={"input": np.array([12])}),
             "fc1": nir.Affine(weight=RNG.normal(0, 0.5, (8, 12)), bias=np.zeros(8)),
             "lif1": cuba(8),
             "rec": nir.Affine(weight=RNG.normal(0, 0.3, (8, 8)), bias=np.zeros(8)),
             "fc2": nir.Affine(weight=RNG.normal(0, 0.5, (3, 8)), bias=full(3, 0.1)),
             "lif2": cuba(3),
             "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "rec"), ("rec", "lif1"), ("lif1", "fc2"),
             ("fc2", "lif2"), ("lif2", "output")]
    edges = [edges[k] for k in edge_order] if edge_order else edges
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def pool_then_conv():
    """A SumPool2d feeding a Conv2d: two synapses in a row, which the Lava
    targets compose into one convolution."""
    nodes = {"input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
             "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "conv": nir.Conv2d(input_shape=(4, 4), weight=RNG.normal(0, 0.5, (3, 2, 3, 3)), bias=np.zeros(3),
                                stride=1, padding=1, dilation=1, groups=1),
             "if1": nir.IF(r=full((3, 4, 4), 1), v_threshold=full((3, 4, 4), 1), v_reset=full((3, 4, 4), 0)),
             "output": nir.Output(output_type={"output": np.array([3, 4, 4])})}
    order = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory, model, active_checkpoint):
    folder = tmp_path_factory.mktemp("inspect")
    paths = {name: folder / f"{name}.nir" for name in ("exported", "recurrent", "pool_conv")}
    write_graph(model_to_nir(model), paths["exported"])
    write_graph(recurrent_graph(), paths["recurrent"])
    write_graph(pool_then_conv(), paths["pool_conv"])
    paths["lava"] = folder / "lava"
    write_artifact(model_to_nir(model), paths["lava"])
    paths["onnx"] = folder / "m.onnx"
    export = CliRunner().invoke(main, ["export", str(active_checkpoint), "--target", "onnx", "-T", "2",
                                       "--out", str(paths["onnx"])], catch_exceptions=False)
    assert export.exit_code == 0, export.output
    return paths


def runs(description) -> dict[str, bool]:
    return {name: verdict["runs"] for name, verdict in description["targets"].items()}


def test_an_exported_graph_runs_on_every_target(files, model):
    d = inspect_json(files["exported"])
    assert d["format"] == "NIR graph"
    assert list(d["targets"]) == target_names() and all(runs(d).values()), d["targets"]
    assert d["info"]["fer2neuro"] and d["info"]["class_names"] == list(model.config.class_names)
    assert not any(edge["back"] for edge in d["edges"])
    nodes = {n["name"]: n for n in d["nodes"]}
    assert d["nodes"][0]["type"] == "Input" and d["nodes"][-1]["type"] == "Output"
    assert nodes["lif_out"]["output_shape"] == [model.config.num_classes]
    assert nodes["pool1_sum"]["params"]["kernel_size"] == [2, 2]
    assert nodes["pool1"]["params"]["v_threshold"]["value"] == 0.5


def test_a_recurrent_graph_marks_its_back_edge_and_says_which_targets_run_it(files):
    d = inspect_json(files["recurrent"])
    assert [(e["source"], e["target"]) for e in d["edges"] if e["back"]] == [("rec", "lif1")]
    assert [n["name"] for n in d["nodes"]] == ["input", "fc1", "lif1", "rec", "fc2", "lif2", "output"]
    lif1 = next(n for n in d["nodes"] if n["name"] == "lif1")
    assert lif1["type"] == "CubaLIF" and lif1["params"]["tau_mem"] == {"shape": [8], "value": 8.0}
    assert d["targets"]["nir"]["runs"]                  # the nir target runs cycles step by step
    assert d["targets"]["onnx"]["runs"]                 # and the onnx lowering unrolls them step by step
    for name in ("lava", "lava-fixed", "loihi"):        # rec becomes a recurrent Dense on lif1
        assert d["targets"][name]["runs"], name
    text = invoke(files["recurrent"]).stdout
    assert "rec -> lif1   back edge: closes a cycle" in text
    assert "(1 back edge closing a cycle)" in text
    assert "lif1 -> rec\n" in text


def test_the_back_edge_rule_follows_node_order_not_edge_order():
    """Whatever order the edges come in, the walk from the Input reaches lif1
    before rec, so rec -> lif1 is the back edge."""
    for order in ([0, 1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1, 0], [3, 4, 2, 0, 6, 1, 5]):
        flat = flatten_graph(recurrent_graph(order))
        assert [flat.edges[k] for k in back_edges(flat)] == [("rec", "lif1")], order


def test_a_self_loop_is_a_back_edge():
    flat = flatten_graph(nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}),
                                             "lif": cuba(2)},
                                      edges=[("input", "lif"), ("lif", "lif")], type_check=False))
    assert back_edges(flat) == {1}


def test_lava_targets_run_a_pool_feeding_a_conv_as_one_synapse(files):
    d = inspect_json(files["pool_conv"])
    assert all(runs(d).values()), d["targets"]
    assert "lava        yes" in invoke(files["pool_conv"]).stdout


@pytest.mark.parametrize("which", ["folder", "network.net"])
def test_an_exported_lava_folder_and_its_network_file(files, which):
    path = files["lava"] if which == "folder" else files["lava"] / "network.net"
    d = inspect_json(path)
    assert d["format"] == "netx network" and d["folder"] == str(files["lava"])
    assert {name for name, ok in runs(d).items() if ok} == set(LAVA_STYLE)
    manifest = json.loads((files["lava"] / "manifest.json").read_text())
    neurons = [layer for layer in d["layers"] if "neuron" in layer]
    assert [layer["name"] for layer in neurons] == [entry["name"] for entry in manifest["layers"]]
    for layer, entry in zip(neurons, manifest["layers"]):
        assert layer["neuron"]["type"] == "CUBA"
        assert (layer["neuron"]["vThMant"], layer["neuron"]["vDecay"], layer["neuron"]["iDecay"]) == \
            (entry["vth"], entry["vDecay"], entry["iDecay"])
        assert layer["shape"] == entry["shape"]
        if entry["weight_min"] is not None:
            weight = layer["weight"]         # a sum pool's weights are all one value
            assert (weight.get("min", weight.get("value")), weight.get("max", weight.get("value"))) == \
                (entry["weight_min"], entry["weight_max"])
    assert "vThMant=" in invoke(path).stdout


def test_an_exported_onnx_model(files, model):
    d = inspect_json(files["onnx"])
    assert d["format"] == "ONNX model"
    meta = d["metadata"]
    assert (meta["timesteps"], meta["encoder"], meta["precision"]) == (2, model.config.encoder, "float64")
    assert meta["input_shape"] == [1, 48, 48] and meta["layers"][-1] == "lif_out"
    assert [v["name"] for v in d["outputs"]] == meta["layers"]
    assert d["operators"] == sum(d["operator_types"].values()) > 0
    assert {name for name, ok in runs(d).items() if ok} == {"onnx"}
    assert "operators:" in invoke(files["onnx"]).stdout


def test_summarise():
    assert summarise(np.full((3, 4), 2.0)) == {"shape": [3, 4], "value": 2.0}
    assert summarise(np.arange(6.0)) == {"shape": [6], "min": 0.0, "max": 5.0}
    assert summarise(np.array([1, 2])) == [1, 2]
    assert summarise(np.array([0.5, 1.0])) == {"shape": [2], "min": 0.5, "max": 1.0}
    assert summarise(np.int64(3)) == 3 and summarise("same") == "same" and summarise(None) is None


def _foreign_onnx(path):
    import onnx
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(path))


@pytest.mark.parametrize("name, make, message", [
    ("missing.nir", None, "no such file or folder"),
    ("notes.txt", lambda p: p.write_text("hello"), "unknown format"),
    ("text.nir", lambda p: p.write_text("hello"), "not a NIR graph (not an HDF5 file)"),
    ("cut.nir", lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64), "not a readable NIR graph"),
    ("bad.net", lambda p: p.write_text("hello"), "not a netx HDF5 network"),
    ("folder", lambda p: p.mkdir(), "not an exported Lava folder"),
    ("foreign.onnx", _foreign_onnx, "not one fer2neuro exported"),
])
@pytest.mark.parametrize("as_json", [False, True])
def test_bad_input_is_a_one_line_error(tmp_path, name, make, message, as_json):
    path = tmp_path / name
    if make:
        make(path)
    result = invoke(path, *(["--json"] if as_json else []))
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: ") and message in lines[0], lines
