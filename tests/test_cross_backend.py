"""The cross-backend equivalence suite: a set of small NIR networks (and
graphs other tools wrote) through every backend that runs NIR graphs.
Float backends (lava, onnx) must equal the NIR reference spike for spike;
the two fixed-point backends must equal each other bit for bit; a backend
that cannot run a network says which node stops it."""
import nir
import numpy as np
import pytest
import snntorch as snn
import torch

from fer2neuro.model.architecture import two_conv_template
from fer2neuro.errors import TargetError
from fer2neuro.exporters.nir_export import model_to_nir
from fer2neuro.targets import get_target

pytestmark = pytest.mark.lava

RNG = np.random.default_rng(7)
T = 6


def full(shape, value):
    return np.full(shape, float(value))


def lif(shape, tau=2.0, threshold=1.0):
    return nir.LIF(tau=full(shape, tau), r=full(shape, 1), v_leak=full(shape, 0), v_threshold=full(shape, threshold),
                   v_reset=full(shape, 0))


def if_(shape, threshold=1.0):
    return nir.IF(r=full(shape, 1), v_threshold=full(shape, threshold), v_reset=full(shape, 0))


def chain(*named, input_shape):
    nodes = {"input": nir.Input(input_type={"input": np.array(input_shape)}), **dict(named)}
    last = named[-1][1]
    nodes["output"] = nir.Output(output_type={"output": np.array(last.output_type["output"])})
    order = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)


def dense_lif():
    w1, w2 = RNG.normal(0, 0.6, (12, 20)), RNG.normal(0, 0.9, (5, 12))
    graph = chain(("fc1", nir.Linear(weight=w1)), ("lif1", lif((12,))), ("fc2", nir.Linear(weight=w2)),
                  ("lif2", lif((5,), tau=4.0)), input_shape=[20])
    return graph, (RNG.random((3, T, 20)) < 0.5).astype(float), 1.0


def conv_if_pool():
    w = RNG.normal(0.1, 0.5, (3, 2, 3, 3))
    graph = chain(("conv", nir.Conv2d(input_shape=(8, 8), weight=w, bias=RNG.normal(0, 0.2, 3), stride=1, padding=1,
                                      dilation=1, groups=1)),
                  ("if1", if_((3, 8, 8))),
                  ("pool_sum", nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                             padding=np.array([0, 0]))),
                  ("pool", if_((3, 4, 4), threshold=0.5)),
                  ("flat", nir.Flatten(input_type={"input": np.array([3, 4, 4])}, start_dim=0, end_dim=-1)),
                  ("fc", nir.Linear(weight=RNG.normal(0.05, 0.4, (4, 48)))), ("lif", lif((4,))),
                  input_shape=[2, 8, 8])
    return graph, (RNG.random((3, T, 2, 8, 8)) < 0.4).astype(float), 1.0


def paper_structure_direct(make_active_model):
    model = make_active_model("small", blocks=two_conv_template(4, (32, 16)))
    x = RNG.random((2, 1, 1, 48, 48)).repeat(4, axis=1)
    return model_to_nir(model), x, 1.0


def paper_structure_poisson(make_active_model):
    model = make_active_model("small", blocks=two_conv_template(4, (32, 16)))
    return model_to_nir(model), (RNG.random((2, 4, 1, 48, 48)) < 0.5).astype(float), 1.0


def snntorch_export():
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(3)
    net = torch.nn.Sequential(
        torch.nn.Linear(10, 8),
        snn.Leaky(beta=torch.full((8,), 0.9), threshold=torch.ones(8), init_hidden=True, reset_mechanism="zero",
                  reset_delay=False),
        torch.nn.Linear(8, 4),
        snn.Leaky(beta=torch.full((4,), 0.8), threshold=torch.ones(4), init_hidden=True, output=True,
                  reset_mechanism="zero", reset_delay=False))
    with torch.no_grad():
        net[0].weight.abs_()
        net[2].weight.abs_().mul_(2)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = export_to_nir(net, torch.zeros(1, 10), ignore_dims=[0])
    return graph, (RNG.random((2, 12, 10)) < 0.6).astype(float), 1e-4


def hand_built_exotic():
    """Non-unit dt, CubaLIF, AvgPool2d, a strided conv and an Affine bias."""
    cuba = nir.CubaLIF(tau_syn=full((4,), 4), tau_mem=full((4,), 8), r=full((4,), 2), v_leak=full((4,), 0.1),
                       v_threshold=full((4,), 1), v_reset=full((4,), 0), w_in=full((4,), 1.5))
    graph = chain(("conv", nir.Conv2d(input_shape=(9, 9), weight=RNG.normal(0.8, 0.5, (2, 1, 3, 3)),
                                      bias=np.zeros(2), stride=2, padding=1, dilation=1, groups=1)),
                  ("lif_c", lif((2, 5, 5), tau=3.0)),
                  ("avg", nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([1, 1]),
                                        padding=np.array([0, 0]))),
                  ("flat", nir.Flatten(input_type={"input": np.array([2, 4, 4])}, start_dim=0, end_dim=-1)),
                  ("aff", nir.Affine(weight=RNG.normal(0.3, 0.5, (4, 32)), bias=RNG.normal(0, 0.1, 4))),
                  ("cuba", cuba), input_shape=[1, 9, 9])
    return graph, (RNG.random((2, 12, 1, 9, 9)) < 0.6).astype(float), 0.5


NETWORKS = {
    "dense-lif": lambda m: dense_lif(),
    "conv-if-maxpool-lowering": lambda m: conv_if_pool(),
    "paper-structure-direct": paper_structure_direct,
    "paper-structure-poisson": paper_structure_poisson,
    "snntorch-export": lambda m: snntorch_export(),
    "hand-built-exotic": lambda m: hand_built_exotic(),
}
# What each backend cannot run, and the node its error must name: nothing now
# (AvgPool2d -> Flatten -> Affine in the exotic network becomes one Dense, and
# the Affine's bias into the CubaLIF a v bias with a shift of u).
CANNOT: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def networks(make_active_model):
    built = {}
    for name, make in NETWORKS.items():
        graph, x, dt = make(make_active_model)
        reference = get_target("nir").run(graph, x, dt=dt)
        built[name] = (graph, x, dt, reference)
    return built


@pytest.mark.parametrize("network", list(NETWORKS))
def test_reference_is_not_silent(networks, network):
    reference = networks[network][3]
    assert all(reference.outputs[n].sum() > 0 for n in reference.spiking), "a silent layer proves nothing"


@pytest.mark.parametrize("network", list(NETWORKS))
def test_float_lava_equals_the_nir_reference(networks, network):
    graph, x, dt, reference = networks[network]
    if ("lava", network) in CANNOT:
        with pytest.raises(TargetError, match=CANNOT[("lava", network)]):
            get_target("lava").run(graph, x, dt=dt)
        return
    out = get_target("lava").run(graph, x, dt=dt)
    assert set(out.spiking) <= set(reference.spiking)
    for name in out.spiking:
        np.testing.assert_array_equal(out.outputs[name], reference.outputs[name], err_msg=name)


@pytest.mark.parametrize("network", list(NETWORKS))
def test_onnx_equals_the_nir_reference(networks, network):
    """The onnx target lowers the same NIR graph (float64) and runs it in
    onnxruntime: every spiking node equals the reference."""
    graph, x, dt, reference = networks[network]
    out = get_target("onnx").run(graph, x, dt=dt)
    assert out.spiking == reference.spiking and out.dt == reference.dt
    for name in reference.spiking:
        np.testing.assert_array_equal(out.outputs[name], reference.outputs[name], err_msg=name)


@pytest.mark.parametrize("network", list(NETWORKS))
def test_fixed_point_backends_agree_bit_for_bit(networks, network):
    graph, x, dt, reference = networks[network]
    if ("loihi", network) in CANNOT:
        for backend in ("lava-fixed", "loihi"):
            with pytest.raises(TargetError, match=CANNOT[(backend, network)]):
                get_target(backend).run(graph, x, dt=dt)
        return
    lava = get_target("lava-fixed").run(graph, x, dt=dt)
    loihi = get_target("loihi").run(graph, x, dt=dt)
    assert lava.spiking == loihi.spiking
    for name in lava.spiking:
        np.testing.assert_array_equal(loihi.outputs[name], lava.outputs[name], err_msg=name)
    # and they are a quantisation of the float network, not something else
    last = lava.spiking[-1]
    agreement = (lava.outputs[last].sum(1) == reference.outputs[last].sum(1)).mean()
    assert agreement > 0.5, agreement
