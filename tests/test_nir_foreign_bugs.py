"""NIR files written by other tools that the targets mishandled, each built
here with the ``nir`` package as that tool writes it and run on the real
targets:

1. an Input type with a batch axis, ``(1, 20)`` for 20 inputs (Norse and
   Rockpool, through nirtorch): every target runs it on (B, T, 20) inputs;
2. ``inspect`` says a target runs a graph exactly when ``simulate`` does,
   and where it does not, gives simulate's reason;
3. ``verify`` lists a target that fails while running as unavailable, with
   a one-line reason, and compares the others;
4. Spyx's recurrent LIF, a ``w_rec`` with two inputs (the forward synapse
   and the LIF's own spikes): the Lava-style targets run it as a recurrent
   Dense, lava equal to nir spike for spike, lava-fixed and loihi bit for bit.
"""
import json

import nir
import numpy as np
import pytest
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.errors import TargetError
from fer2neuro.lowering.lava_plan import build_plan
from fer2neuro.nirgraph.describe import declared_input_shape, input_shape
from fer2neuro.nirgraph.file import write_graph
from fer2neuro.nirgraph.flat import flatten_graph
from fer2neuro.targets import get_target, target_names

N_IN, N = 20, 8
LAVA_STYLE = ("lava", "lava-fixed", "loihi")
BATCH_FREE = ("nir", "onnx", "loihi")          # the targets that need no Lava
RNG_SEED = 3


def lif(shape=(N,), tau=4.0):
    """A LIF Lava's neuron holds exactly: one tau and threshold, reset to 0."""
    return nir.LIF(tau=np.full(shape, tau), r=np.ones(shape), v_leak=np.zeros(shape),
                   v_threshold=np.ones(shape), v_reset=np.zeros(shape))


def batch_axis_graph(lif_shape=(N,)) -> nir.NIRGraph:
    """Input((1, 20)) -> Affine (8, 20) -> LIF -> Output((1, 8)), as nirtorch
    traces a model on a batch of one (it does not type-check as NIR)."""
    rng = np.random.default_rng(RNG_SEED)
    nodes = {"input": nir.Input(input_type=np.array([1, N_IN])),
             "fc": nir.Affine(weight=rng.normal(0.25, 0.5, (N, N_IN)), bias=rng.normal(0.05, 0.05, N)),
             "lif": lif(lif_shape),
             "output": nir.Output(output_type=np.array([1, N]))}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")], type_check=False)


def spyx_rnn(rec_bias=False, nested=True, loop=True) -> nir.NIRGraph:
    """Spyx's recurrent LIF: Input -> Affine -> [w_rec <-> LIF] -> Output.
    ``nested``: as Spyx groups it (``_create_rnn_subgraph``), a subgraph
    whose Input feeds ``w_rec``, so w_rec sums the forward synapse and the
    LIF's spikes; else flat, the LIF summing the Affine and w_rec.
    ``loop=False``: without the edge from the LIF back into w_rec."""
    rng = np.random.default_rng(RNG_SEED)
    fc = nir.Affine(weight=rng.normal(0.3, 0.6, (N, N_IN)), bias=rng.normal(0.0, 0.05, N))
    w = rng.normal(0.0, 0.8, (N, N))
    w_rec = nir.Affine(weight=w, bias=rng.normal(0.1, 0.05, N)) if rec_bias else nir.Linear(weight=w)
    io = {"input": nir.Input(input_type=np.array([N_IN])), "output": nir.Output(output_type=np.array([N]))}
    if not nested:
        nodes = {"input": io["input"], "fc": fc, "lif": lif(), "w_rec": w_rec, "output": io["output"]}
        edges = [("input", "fc"), ("fc", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")]
        edges = edges if loop else [e for e in edges if e != ("lif", "w_rec")]
        return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    edges = [("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output"), ("input", "w_rec")]
    sub = nir.NIRGraph(nodes={"lif": lif(), "w_rec": w_rec, "input": nir.Input(input_type=np.array([N])),
                              "output": nir.Output(output_type=np.array([N]))},
                       edges=edges if loop else edges[1:], type_check=False)
    nodes = {"input": io["input"], "fc": fc, "rlif": sub, "output": io["output"]}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "rlif"), ("rlif", "output")],
                        type_check=False)


def spikes(batch=2, steps=30, seed=1, rate=0.4):
    return (np.random.default_rng(seed).random((batch, steps, N_IN)) < rate).astype(np.float64)


def run(target, graph, x):
    return get_target(target).run(graph, x, dt=1.0)


# --- 1. a batch axis in the Input type -------------------------------------------

def test_the_leading_1_is_a_batch_axis_only_where_the_next_weight_shows_it():
    flat = flatten_graph(batch_axis_graph())
    assert declared_input_shape(flat, "input") == (1, N_IN) and input_shape(flat, "input") == (N_IN,)

    def conv_input(shape, in_channels):
        nodes = {"input": nir.Input(input_type=np.array(shape)),
                 "conv": nir.Conv2d(input_shape=shape[-2:], weight=np.ones((2, in_channels, 3, 3)), stride=1,
                                    padding=1, dilation=1, groups=1, bias=np.zeros(2))}
        return input_shape(flatten_graph(nir.NIRGraph(nodes=nodes, edges=[("input", "conv")],
                                                      type_check=False)), "input")

    assert conv_input((1, 3, 8, 8), 3) == (3, 8, 8)       # nirtorch's batch of one before (C, H, W)
    assert conv_input((1, 8, 8), 1) == (1, 8, 8)          # one channel of 8 x 8: no batch axis
    graph = batch_axis_graph()
    graph.nodes["fc"] = nir.Affine(weight=np.ones((N, 1)), bias=np.zeros(N))     # takes (1,): the 1 is data
    assert input_shape(flatten_graph(graph), "input") == (1, N_IN)
    nested = batch_axis_graph()                # the Affine inside a subgraph: seen through its Input
    nested.nodes["fc"] = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([N_IN])),
                                             "fc": nested.nodes["fc"], "output": nir.Output(output_type=np.array([N]))},
                                      edges=[("input", "fc"), ("fc", "output")], type_check=False)
    assert input_shape(flatten_graph(nested), "input") == (N_IN,)


@pytest.mark.parametrize("target", [*BATCH_FREE, pytest.param("lava", marks=pytest.mark.lava),
                                    pytest.param("lava-fixed", marks=pytest.mark.lava)])
def test_every_target_runs_an_input_type_with_a_batch_axis(target):
    graph, x = batch_axis_graph(), spikes(steps=12)
    ref, out = run("nir", graph, x), run(target, graph, x)
    assert out.output.shape == (2, 12, N) and ref.outputs["lif"].sum() > 10
    if get_target(target).arithmetic == "fixed":
        assert (out.outputs["lif"] == ref.outputs["lif"]).mean() > 0.9     # reported, not required exact
    else:
        np.testing.assert_array_equal(out.outputs["lif"], ref.outputs["lif"])
    # a batch written with the type's batch axis, (B, T, 1, 20), is the same batch
    np.testing.assert_array_equal(run(target, graph, x[:, :, None]).outputs["lif"], out.outputs["lif"])


@pytest.mark.lava
def test_the_fixed_point_targets_agree_bit_for_bit_on_it():
    graph, x = batch_axis_graph(), spikes(steps=12)
    np.testing.assert_array_equal(run("lava-fixed", graph, x).outputs["lif"], run("loihi", graph, x).outputs["lif"])


# --- 2. inspect says what simulate does ---------------------------------------------

def inspect_verdicts(path) -> dict:
    result = CliRunner().invoke(main, ["inspect", str(path), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["targets"]


def simulate(path, target, x_path, out):
    return CliRunner().invoke(main, ["simulate", str(path), "--target", target, "--input", str(x_path),
                                     "--out", str(out), "--dt", "1"])


GRAPHS = {"batch_axis": batch_axis_graph, "batch_axis_lif_1x8": lambda: batch_axis_graph(lif_shape=(1, N)),
          "spyx_rnn": spyx_rnn}


@pytest.mark.lava
@pytest.mark.parametrize("name", list(GRAPHS))
def test_inspect_says_a_target_runs_a_graph_exactly_when_simulate_does(name, tmp_path):
    path, x_path = tmp_path / f"{name}.nir", tmp_path / "x.npy"
    write_graph(GRAPHS[name](), path)
    np.save(x_path, spikes(batch=1, steps=6))
    verdicts = inspect_verdicts(path)
    assert list(verdicts) == target_names()
    for target, verdict in verdicts.items():
        result = simulate(path, target, x_path, tmp_path / f"{target}.npz")
        assert result.exception is None or isinstance(result.exception, SystemExit), (target, result.exception)
        if verdict["runs"]:
            assert result.exit_code == 0, (target, result.output)
            assert np.load(tmp_path / f"{target}.npz")["output"].shape == (1, 6, N)
        else:
            assert result.exit_code != 0, target
            errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
            assert errors == [f"Error: {verdict['reason']}"], (target, result.stderr)
    expected = {"batch_axis": True, "spyx_rnn": True, "batch_axis_lif_1x8": False}[name]
    assert all(v["runs"] is expected for v in verdicts.values()), verdicts


@pytest.mark.parametrize("target,where,what", [
    ("onnx", "fer2neuro.targets.onnx_runtime.nir_to_onnx", "the ONNX lowering"),
    ("loihi", "fer2neuro.targets.loihi.simulator.load_netx", "reading the integer network back"),
    ("lava-fixed", "fer2neuro.targets.lava.target.quantise", "quantising"),
    ("lava", "fer2neuro.targets.lava.target.build_plan", "planning the layers"),
])
def test_the_check_takes_the_steps_a_first_run_takes(target, where, what, monkeypatch, tmp_path):
    """Each step a run takes before it simulates is part of the target's
    check: where it fails, inspect says no with its message."""
    def refuse(*args, **kwargs):
        raise TargetError(f"{what} says no")

    monkeypatch.setattr(where, refuse)
    with pytest.raises(TargetError, match=f"{what} says no"):
        get_target(target).check(batch_axis_graph())
    write_graph(batch_axis_graph(), tmp_path / "g.nir")
    assert inspect_verdicts(tmp_path / "g.nir")[target] == {"runs": False, "reason": f"{what} says no"}


def test_a_fault_inside_a_target_is_its_own_no_in_inspect(monkeypatch, tmp_path):
    def crash(*args, **kwargs):
        raise ValueError("shapes (1, 20) and (20,) not aligned")

    monkeypatch.setattr("fer2neuro.targets.onnx_runtime.nir_to_onnx", crash)
    write_graph(batch_axis_graph(), tmp_path / "g.nir")
    verdicts = inspect_verdicts(tmp_path / "g.nir")
    assert verdicts["onnx"]["reason"] == "the target failed (ValueError: shapes (1, 20) and (20,) not aligned)"
    assert verdicts["nir"]["runs"] and verdicts["loihi"]["runs"]


# --- 3. verify goes on past a target that fails while running -----------------------

def verify_json(path, targets, *extra):
    result = CliRunner().invoke(main, ["verify", str(path), "--targets", targets, "--samples", "2", "-T", "8",
                                       "--json", *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_verify_lists_a_target_that_fails_at_run_time_and_compares_the_others(monkeypatch, tmp_path):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    def fail(self, x, batch_size):
        raise Fail("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code\nwhile running Add node")

    monkeypatch.setattr("fer2neuro.targets.onnx_runtime.OnnxModel.run", fail)
    write_graph(batch_axis_graph(), tmp_path / "g.nir")
    result = verify_json(tmp_path / "g.nir", "onnx,loihi")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    reason = data["unavailable"]["onnx"]
    assert reason.startswith("the target failed (Fail: [ONNXRuntimeError]") and "\n" not in reason
    assert list(data["backends"]) == ["loihi"] and data["equivalent"] is True


@pytest.mark.lava
def test_verify_all_goes_on_when_lava_fails_inside_lava(monkeypatch, tmp_path):
    """The original failure: Lava's own exception while building the run."""
    from fer2neuro.lava_compat import require_lava

    require_lava()
    from lava.magma.core.process.ports.exceptions import TransposeShapeError

    def transpose_fails(plan, x):
        raise TransposeShapeError((1, N_IN), [2, 1, 0])

    monkeypatch.setattr("fer2neuro.targets.lava.processes.run_float_sample", transpose_fails)
    write_graph(batch_axis_graph(), tmp_path / "g.nir")
    result = verify_json(tmp_path / "g.nir", "all")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["unavailable"]) == {"lava"}
    assert data["unavailable"]["lava"].startswith("the target failed (TransposeShapeError: ")
    assert set(data["backends"]) == {"lava-fixed", "loihi", "onnx"} and data["equivalent"] is True
    assert data["fixed_point_agreement"]["lava-fixed vs loihi"]["bit_exact"] is True


# --- 4. Spyx's recurrent LIF: a two-input w_rec ----------------------------------------

@pytest.mark.parametrize("nested", [True, False])
def test_a_two_input_w_rec_is_planned_as_a_recurrent_dense(nested):
    graph = spyx_rnn(rec_bias=True, nested=nested)
    plan = build_plan(graph, direct=False, dt=1.0)
    (layer,) = plan.layers
    flat = flatten_graph(graph)
    w_rec = flat.nodes["rlif.w_rec" if nested else "w_rec"]
    fc, gain = flat.nodes["fc"], 1.0 / 4.0                      # dt * r / tau
    np.testing.assert_allclose(layer.recurrent, w_rec.weight * gain)
    if nested:       # w_rec sums the forward synapse and the spikes: W(fc + s) + b = W fc + b + W s
        np.testing.assert_allclose(layer.weight, w_rec.weight @ fc.weight * gain)
        np.testing.assert_allclose(layer.bias, (w_rec.weight @ fc.bias + w_rec.bias) * gain)
        assert layer.recurrent_bias is None                     # w_rec's bias is added once, with fc's
    else:
        np.testing.assert_allclose(layer.weight, fc.weight * gain)
        np.testing.assert_allclose(layer.recurrent_bias, w_rec.bias * gain)


@pytest.mark.parametrize("rec_bias", [False, True])
def test_a_two_input_w_rec_on_loihi_agrees_with_nir(rec_bias):
    graph, x = spyx_rnn(rec_bias=rec_bias), spikes()
    ref, loihi = run("nir", graph, x), run("loihi", graph, x)
    assert ref.outputs["rlif.lif"].sum() > 20
    assert (loihi.outputs["rlif.lif"] == ref.outputs["rlif.lif"]).mean() > 0.9


@pytest.mark.lava
@pytest.mark.parametrize("rec_bias", [False, True])
def test_a_two_input_w_rec_on_lava_equals_nir_spike_for_spike(rec_bias):
    graph, x = spyx_rnn(rec_bias=rec_bias), spikes()
    ref, lava = run("nir", graph, x), run("lava", graph, x)
    assert ref.outputs["rlif.lif"].sum() > 20, "the layer hardly spikes: the test would prove little"
    np.testing.assert_array_equal(lava.outputs["rlif.lif"], ref.outputs["rlif.lif"])
    np.testing.assert_array_equal(lava.output, ref.output)
    # the recurrence matters: without w_rec's back edge the layer spikes differently
    plain = run("nir", spyx_rnn(rec_bias=rec_bias, loop=False), x)
    assert not np.array_equal(plain.outputs["rlif.lif"], lava.outputs["rlif.lif"])


@pytest.mark.lava
def test_a_two_input_w_rec_is_bit_exact_between_lava_fixed_and_loihi():
    graph, x = spyx_rnn(rec_bias=True), spikes()
    fixed, loihi = run("lava-fixed", graph, x), run("loihi", graph, x)
    assert fixed.outputs["rlif.lif"].sum() > 20
    np.testing.assert_array_equal(fixed.outputs["rlif.lif"], loihi.outputs["rlif.lif"])
