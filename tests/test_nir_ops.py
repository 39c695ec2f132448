"""The NIR reference target's stateless nodes against PyTorch, each run as a
one-node graph, also after a round trip through a .nir file (which hands
stride, padding, ... back as numpy arrays or bytes)."""
import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fer2neuro.nirgraph.file import read_graph, write_graph
from fer2neuro.targets.nir_reference import NIRReferenceTarget

RNG = np.random.default_rng(0)


def run_node(node, x, in_shape, tmp_path=None):
    """x (B, T, *in_shape) through Input -> node; returns the node's output.
    With ``tmp_path`` the graph goes through nir.write / nir.read first."""
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array(in_shape)}), "n": node},
                         edges=[("input", "n")], type_check=False)
    if tmp_path is not None:
        write_graph(graph, tmp_path / "g.nir")
        graph = read_graph(tmp_path / "g.nir")
    return NIRReferenceTarget().run(graph, x, record=["n"]).outputs["n"]


def frames(x):
    """(B, T, ...) -> torch (B*T, ...)"""
    return torch.from_numpy(x.reshape(-1, *x.shape[2:]))


CONV2D_CASES = [
    dict(stride=1, padding=1, dilation=1, groups=1),
    dict(stride=2, padding=0, dilation=1, groups=1),
    dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=1),
    dict(stride=1, padding=2, dilation=2, groups=2),
    dict(stride=1, padding=1, dilation=1, groups=4),      # depthwise
    dict(stride=1, padding="same", dilation=1, groups=1),
    dict(stride=1, padding="valid", dilation=1, groups=1),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("case", CONV2D_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("through_file", [False, True])
def test_conv2d_matches_torch(case, through_file, tmp_path):
    c_in, c_out, k = 4, 8, 3 if case["padding"] != "same" else 4
    weight = RNG.normal(size=(c_out, c_in // case["groups"], k, k))
    bias = RNG.normal(size=c_out)
    x = RNG.normal(size=(2, 3, c_in, 9, 10))
    node = nir.Conv2d(input_shape=(9, 10), weight=weight, bias=bias, **case)
    got = run_node(node, x, [c_in, 9, 10], tmp_path if through_file else None)
    want = F.conv2d(frames(x), torch.from_numpy(weight), torch.from_numpy(bias), **case).numpy()
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [dict(stride=1, padding=1, dilation=1, groups=1),
                                  dict(stride=2, padding=2, dilation=2, groups=2)])
def test_conv1d_matches_torch(case, tmp_path):
    weight = RNG.normal(size=(6, 4 // case["groups"], 3))
    bias = RNG.normal(size=6)
    x = RNG.normal(size=(2, 3, 4, 11))
    got = run_node(nir.Conv1d(input_shape=11, weight=weight, bias=bias, **case), x, [4, 11], tmp_path)
    want = F.conv1d(frames(x), torch.from_numpy(weight), torch.from_numpy(bias), **case).numpy()
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 1, 1), (3, 2, 1)])
def test_pools_match_torch(kernel, stride, padding, tmp_path):
    x = RNG.normal(size=(2, 2, 3, 8, 8))
    pair = np.array([kernel, kernel]), np.array([stride, stride]), np.array([padding, padding])
    got_sum = run_node(nir.SumPool2d(*pair), x, [3, 8, 8], tmp_path)
    got_avg = run_node(nir.AvgPool2d(*pair), x, [3, 8, 8])
    avg = F.avg_pool2d(frames(x), kernel, stride, padding).numpy()      # count_include_pad=True
    np.testing.assert_allclose(got_avg.reshape(avg.shape), avg, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_sum.reshape(avg.shape), avg * kernel * kernel, rtol=1e-12, atol=1e-12)


def test_flatten_affine_linear_scale(tmp_path):
    x = RNG.normal(size=(2, 3, 2, 3, 4))
    flat = run_node(nir.Flatten(input_type={"input": np.array([2, 3, 4])}, start_dim=0, end_dim=-1),
                    x, [2, 3, 4], tmp_path)
    np.testing.assert_array_equal(flat, x.reshape(2, 3, 24))
    partial = run_node(nir.Flatten(input_type={"input": np.array([2, 3, 4])}, start_dim=1, end_dim=2),
                       x, [2, 3, 4])
    assert partial.shape == (2, 3, 2, 12)
    w, b = RNG.normal(size=(5, 24)), RNG.normal(size=5)
    v = x.reshape(2, 3, 24)
    np.testing.assert_allclose(run_node(nir.Affine(weight=w, bias=b), v, [24]), v @ w.T + b, rtol=1e-12)
    np.testing.assert_allclose(run_node(nir.Linear(weight=w), v, [24]), v @ w.T, rtol=1e-12)
    s = RNG.normal(size=24)
    np.testing.assert_allclose(run_node(nir.Scale(scale=s), v, [24]), v * s, rtol=1e-12)
