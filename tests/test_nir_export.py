"""Export to NIR: the graph's structure and meaning, BatchNorm folding, the
max-pool lowering, metadata, and the round trip through a .nir file."""
import os
import stat

import nir
import numpy as np
import pytest
import torch

from fer2neuro.errors import GraphError
from fer2neuro.exporters.nir_export import MAXPOOL_THRESHOLD, fold_batchnorm, model_to_nir
from fer2neuro.nirgraph.file import GraphInfo, read_graph, write_graph
from fer2neuro.model.layers import SPIKING_KINDS, layer_names
from fer2neuro.model.config import ModelConfig as TemplateConfig

# The spiking layers of the two-conv template, which every preset these tests use has.
SPIKING_LAYERS = layer_names(TemplateConfig(), *SPIKING_KINDS)

NODE_TYPES = {
    "input": nir.Input, "conv1": nir.Conv2d, "if1": nir.IF, "pool1_sum": nir.SumPool2d, "pool1": nir.IF,
    "conv2": nir.Conv2d, "if2": nir.IF, "pool2_sum": nir.SumPool2d, "pool2": nir.IF, "flatten": nir.Flatten,
    "fc1": nir.Linear, "lif1": nir.LIF, "fc2": nir.Linear, "lif2": nir.LIF, "fc3": nir.Linear,
    "lif_out": nir.LIF, "output": nir.Output,
}


@pytest.fixture(scope="module")
def model(make_active_model):
    return make_active_model("small")


@pytest.fixture(scope="module")
def graph(model):
    return model_to_nir(model)


def test_graph_is_a_chain_of_the_expected_nodes(graph):
    assert {name: type(node) for name, node in graph.nodes.items()} == NODE_TYPES
    order = list(NODE_TYPES)
    assert sorted(graph.edges) == sorted(zip(order[:-1], order[1:]))
    assert all(name in graph.nodes for name in SPIKING_LAYERS)


def test_neuron_parameters_are_spec_section_2(graph, model):
    c = model.config.blocks[0].channels
    for name, shape in (("if1", (c, 48, 48)), ("if2", (c, 24, 24))):
        node = graph.nodes[name]
        assert node.r.shape == shape
        assert (node.r == 1).all() and (node.v_threshold == 1).all() and (node.v_reset == 0).all()
    for name, shape in (("pool1", (c, 24, 24)), ("pool2", (c, 12, 12))):
        node = graph.nodes[name]
        assert node.v_threshold.shape == shape
        assert (node.v_threshold == MAXPOOL_THRESHOLD).all() and (node.v_reset == 0).all()
        assert node.metadata["lowered_from"] == "MaxPool2d"
        pool = graph.nodes[f"{name}_sum"]
        assert pool.kernel_size.tolist() == [2, 2] and pool.stride.tolist() == [2, 2]
    for name, n in (("lif1", 256), ("lif2", 128), ("lif_out", 7)):
        node = graph.nodes[name]
        assert node.tau.shape == (n,)
        assert (node.tau == 2).all() and (node.r == 1).all() and (node.v_leak == 0).all()
        assert (node.v_threshold == 1).all() and (node.v_reset == 0).all()
    np.testing.assert_array_equal(graph.nodes["fc1"].weight, model.fc1.weight.detach().numpy())


def test_batchnorm_folding_computes_conv_then_bn(model):
    x = torch.rand(3, 1, 48, 48, dtype=torch.float64)
    weight, bias = fold_batchnorm(model.conv1, model.bn1)
    folded = torch.nn.functional.conv2d(x, torch.from_numpy(weight), torch.from_numpy(bias), padding=1)
    with torch.no_grad():
        torch.testing.assert_close(folded, model.bn1(model.conv1(x)), rtol=1e-12, atol=1e-12)
    assert not np.allclose(weight, model.conv1.weight.detach().numpy())     # BN did something


def test_metadata(graph, model):
    info = GraphInfo.of(graph)
    assert info == GraphInfo(dt=1.0, timesteps=4, encoder="direct", class_names=model.config.class_names,
                             preset="small", fer2neuro=True)
    poisson = GraphInfo.of(model_to_nir(model, encoder="poisson", timesteps=8))
    assert (poisson.encoder, poisson.timesteps) == ("poisson", 8)


def test_round_trip_keeps_every_node_and_parameter(graph, tmp_path):
    path = tmp_path / "model.nir"
    write_graph(graph, path)
    back = nir.read(path)
    assert set(back.nodes) == set(graph.nodes)
    assert sorted(back.edges) == sorted(graph.edges)
    for name, node in graph.nodes.items():
        other = back.nodes[name]
        assert type(other) is type(node), name
        for field, value in vars(node).items():
            if field in ("input_type", "output_type", "metadata"):
                continue
            got = getattr(other, field)
            if isinstance(value, np.ndarray):
                assert got.dtype == value.dtype, (name, field)
                np.testing.assert_array_equal(got, value, err_msg=f"{name}.{field}")
            else:
                assert np.array_equal(np.asarray(got), np.asarray(value)), (name, field)
    assert GraphInfo.of(back) == GraphInfo.of(graph)


def test_folded_conv_is_stored_in_float64_and_exact_values_in_float32(graph):
    from fer2neuro.model.config import preset_config
    from fer2neuro.model.network import build_model

    trained_as_float32 = model_to_nir(build_model(preset_config("small")).eval())
    assert trained_as_float32.nodes["conv1"].weight.dtype == np.float64      # BN folded in float64
    assert trained_as_float32.nodes["fc1"].weight.dtype == np.float32        # exactly the trained weights
    assert trained_as_float32.nodes["if1"].v_threshold.dtype == np.float32
    assert graph.nodes["fc1"].weight.dtype == np.float64       # this model's weights are float64 values


def test_write_is_atomic_and_readable_by_others(graph, tmp_path, monkeypatch):
    path = tmp_path / "model.nir"
    write_graph(graph, path)
    before = path.read_bytes()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~_umask()

    def crash(file, g, **kw):
        file.write(b"\x89HDF half")        # into memory (write_hdf5), then a failure
        raise OSError("disk full")

    monkeypatch.setattr(nir, "write", crash)
    with pytest.raises(OSError, match="disk full"):
        write_graph(graph, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.nir"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_read_errors(tmp_path):
    with pytest.raises(GraphError, match="no such NIR graph file"):
        read_graph(tmp_path / "missing.nir")
    (tmp_path / "text.nir").write_text("hello")
    with pytest.raises(GraphError, match="not an HDF5 file"):
        read_graph(tmp_path / "text.nir")
    import h5py
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(GraphError, match="not a readable NIR graph"):
        read_graph(tmp_path / "other.h5")
