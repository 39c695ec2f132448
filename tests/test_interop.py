"""fer2neuro's side of interop: dialects (reading a graph as its writer ran
it), the tested causes of a divergence, the ``interop`` command and its
reports, ``--semantics`` and the dt note. Per-peer tests, with the peers'
own importers and simulators, are in tests/test_interop_<peer>.py."""
from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.errors import ConfigError
from fer2neuro.interop import causes
from fer2neuro.interop.peers import parse_peers, python_of
from fer2neuro.nirgraph import dialects
from fer2neuro.nirgraph.file import GraphInfo, write_graph
from fer2neuro.nirgraph.flat import flatten_graph
from fer2neuro.targets import get_target


def dense_lif_graph(n_in=6, n=5, seed=0, dt=None, tau=4.0):
    rng = np.random.default_rng(seed)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "fc": nir.Affine(weight=rng.normal(0.6, 0.5, (n, n_in)), bias=rng.normal(0, 0.1, n)),
        "lif": nir.LIF(tau=np.full(n, tau), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                       v_reset=np.zeros(n)),
        "output": nir.Output(output_type={"output": np.array([n])}),
    }
    meta = {} if dt is None else {"dt": dt}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")], metadata=meta)


def spikes_in(batch=3, steps=25, n=6, seed=1, rate=0.5):
    return (np.random.default_rng(seed).random((batch, steps, n)) < rate).astype(np.float64)


# -- dialects ---------------------------------------------------------------

def test_every_peer_has_a_dialect_and_fer2neuro_files_read_as_nir(active_small_model):
    from fer2neuro.exporters.nir_export import model_to_nir

    from fer2neuro.interop.peers import PEERS, RUNNERS

    assert set(dialects.PEERS) == {"snntorch", "norse", "sinabs", "rockpool", "spyx"} == set(PEERS)
    assert all((RUNNERS / f"{peer}.py").is_file() for peer in PEERS)
    graph = model_to_nir(active_small_model)
    assert dialects.detect(graph) == "nir"                   # fer2neuro's own files are never a peer's
    assert dialects.apply(graph, "auto") is not graph         # a copy: the caller's graph is untouched
    assert dialects.of_graph(dialects.apply(graph, "auto")).name == "nir"


def test_apply_names_the_dialect_sets_its_dt_and_refuses_a_second_one():
    graph = dense_lif_graph()
    read = dialects.apply(graph, "snntorch")
    assert dialects.of_graph(read).name == "snntorch"
    assert flatten_graph(read).dialect == "snntorch"
    assert "fer2neuro_dialect" not in (graph.metadata or {})      # the input graph is not changed
    default = dialects.named("snntorch").default_dt
    assert GraphInfo.of(read).dt == (default if default is not None else None)
    assert dialects.apply(read, "snntorch") is read                # applied once
    with pytest.raises(ConfigError, match="already read with the snntorch semantics"):
        dialects.apply(read, "sinabs")
    with pytest.raises(ConfigError, match="unknown semantics"):
        dialects.apply(graph, "brian2")


def test_a_graph_with_its_dt_keeps_it_under_any_dialect():
    graph = dense_lif_graph(dt=0.5)
    for name in dialects.DIALECTS:
        assert GraphInfo.of(dialects.apply(graph, name)).dt == 0.5


# -- causes -----------------------------------------------------------------

def test_nir_knobs_step_a_layer_exactly_as_the_nir_target():
    graph = dense_lif_graph()
    x = spikes_in()
    rec = get_target("nir").open(graph).run(x, dt=1.0, record="all")
    current = causes.layer_current(flatten_graph(graph), "lif", rec.outputs)
    np.testing.assert_array_equal(causes.step_layer(graph.nodes["lif"], current, 1.0, causes.NIR_KNOBS),
                                  rec.outputs["lif"])
    assert rec.outputs["lif"].sum() > 10


@torch.no_grad()
def snntorch_leaky_spikes(currents: np.ndarray, beta: float, reset: str) -> np.ndarray:
    """snnTorch's own Leaky (reset_delay=False, as its NIR importer builds
    it) on the currents (B, T, N), float64."""
    import snntorch as snn

    neuron = snn.Leaky(beta=torch.tensor(beta, dtype=torch.float64), threshold=1.0, reset_mechanism=reset,
                       reset_delay=False)
    mem = torch.zeros(currents.shape[0], currents.shape[2], dtype=torch.float64)
    out = []
    for t in range(currents.shape[1]):
        spk, mem = neuron(torch.from_numpy(currents[:, t]), mem)
        out.append(spk.numpy())
    return np.stack(out, axis=1)


def test_the_subtract_reset_of_a_real_snntorch_leaky_is_named_as_the_cause():
    """snnTorch's Leaky with its default subtract reset, on currents that
    make NIR's LIF (dt/tau = 1 - beta, r = 1/(1 - beta)) the same neuron but
    for the reset: the reset is the cause that brings it closest. (Not
    exact: with reset_delay=False snnTorch decides a spike on a membrane
    already reduced by the threshold when the previous one was still above
    it, a quirk of its own that its dialect mirrors.)"""
    tau, dt = 4.0, 1.0
    graph = dense_lif_graph(tau=tau)
    graph.nodes["lif"].r = np.full(5, tau)         # v + (I r - v)/tau = (1 - 1/tau) v + I: snnTorch's Leaky
    x = spikes_in(steps=40)
    rec = get_target("nir").open(graph).run(x, dt=dt, record="all")
    flat = flatten_graph(graph)
    current = causes.layer_current(flat, "lif", rec.outputs)
    peer = snntorch_leaky_spikes(current, 1 - dt / tau, "subtract")
    same = snntorch_leaky_spikes(current, 1 - dt / tau, "zero")
    assert causes.equal_fraction(same, rec.outputs["lif"]) == 1.0       # with a zero reset: the same neuron
    assert causes.equal_fraction(peer, rec.outputs["lif"]) < 1.0
    tests = {t.cause: t.equal for t in causes.test_layer_causes(flat, "lif", rec.outputs, peer, dt, None)}
    baseline = causes.equal_fraction(rec.outputs["lif"], peer)
    assert tests["reset"] > baseline
    assert [c for c, e in tests.items() if e == max(tests.values())] == ["reset"]


def test_channels_last_flatten_permutes_the_affine_columns():
    c, h, w = 2, 3, 4
    nodes = {"input": nir.Input(input_type={"input": np.array([c, h, w])}),
             "flat": nir.Flatten(input_type={"input": np.array([c, h, w])}, start_dim=0, end_dim=-1),
             "fc": nir.Linear(weight=np.arange(2 * c * h * w, dtype=float).reshape(2, -1)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "flat"), ("flat", "fc"), ("fc", "output")])
    x = np.random.default_rng(0).random((1, c, h, w))
    reread = causes.channels_last_flatten(graph)
    got = reread.nodes["fc"].weight @ x.reshape(-1)                       # NIR's (C, H, W) flatten
    want = graph.nodes["fc"].weight @ x.transpose(0, 2, 3, 1).reshape(-1)   # the file's weight on (H, W, C)
    np.testing.assert_allclose(got, want)
    assert causes.channels_last_flatten(dense_lif_graph()) is None


# -- peers and the command --------------------------------------------------

def test_peer_names_are_checked():
    assert "snntorch" in parse_peers("all")
    with pytest.raises(ConfigError, match="unknown peer brian2"):
        parse_peers("snntorch,brian2")


def test_interop_refuses_bad_options_in_one_line(tmp_path):
    write_graph(dense_lif_graph(dt=1.0), tmp_path / "g.nir")
    runner = CliRunner()
    for args, words in ((["--peers", "brian2"], "unknown peer"), (["--targets", "loihi2"], "unknown target"),
                        (["--semantics", "x"], "Invalid value")):
        result = runner.invoke(main, ["interop", str(tmp_path / "g.nir"), *args])
        assert result.exit_code != 0 and words in result.output, result.output
        assert "Traceback" not in result.output
    result = runner.invoke(main, ["interop", str(tmp_path / "missing.nir")])
    assert result.exit_code == 1 and "no such file" in result.output


needs_snntorch_peer = pytest.mark.skipif(python_of("snntorch") is None, reason="no snnTorch peer environment")


@needs_snntorch_peer
def test_interop_runs_a_graph_in_snntorch_and_reports_layers_and_causes(tmp_path):
    """A LIF graph without dt (as snnTorch writes them) run by snnTorch's own
    importer (it fixes dt = 1e-4): the report has every stage and, where
    snnTorch diverges, tested causes."""
    graph = dense_lif_graph(dt=1e-4, tau=4e-4)
    graph.nodes["lif"].r = np.full(5, 4.0)          # dt r / tau = 1: snnTorch's importer keeps the weights
    write_graph(graph, tmp_path / "g.nir")
    np.save(tmp_path / "x.npy", spikes_in(steps=30))
    result = CliRunner().invoke(main, ["interop", str(tmp_path / "g.nir"), "--peers", "snntorch",
                                       "--input", str(tmp_path / "x.npy"), "--targets", "nir,onnx",
                                       "--out", str(tmp_path / "rep"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    peer = data["peers"]["snntorch"]
    assert peer["loads"] and peer["runs"], peer
    assert [x["layer"] for x in peer["layers"]] == ["lif"]
    assert all(x["exact"] for x in data["targets"]["onnx"])
    if not peer["exact"]:
        assert peer["causes_tested"] and peer["verdict"]
    saved = json.loads((tmp_path / "rep" / "interop.json").read_text())
    assert saved["peers"]["snntorch"]["layers"] == peer["layers"]
    assert "| snntorch" in (tmp_path / "rep" / "interop.md").read_text()


# -- --semantics and dt -----------------------------------------------------

def test_simulate_says_which_dt_it_assumed_for_a_graph_without_one(tmp_path):
    write_graph(dense_lif_graph(), tmp_path / "g.nir")
    np.save(tmp_path / "x.npy", spikes_in())
    runner = CliRunner()
    result = runner.invoke(main, ["simulate", str(tmp_path / "g.nir"), "--input", str(tmp_path / "x.npy"),
                                  "--out", str(tmp_path / "y.npz")])
    assert result.exit_code == 0, result.output
    assert "gives no dt in its metadata: ran at dt = 1" in result.output
    result = runner.invoke(main, ["simulate", str(tmp_path / "g.nir"), "--input", str(tmp_path / "x.npy"),
                                  "--out", str(tmp_path / "y.npz"), "--dt", "0.5", "--json"])
    assert json.loads(result.output)["dt_assumed"] is False


def test_simulate_semantics_changes_the_dynamics_only_where_the_dialect_does(tmp_path):
    """Every dialect runs a plain graph on nir; the result equals NIR's
    unless the dialect changes the LIF's dynamics or the graph's dt."""
    graph = dense_lif_graph(dt=1.0)
    write_graph(graph, tmp_path / "g.nir")
    np.save(tmp_path / "x.npy", spikes_in())
    runner = CliRunner()
    base = None
    for name in sorted(dialects.CHOICES, key=lambda n: n != "nir"):      # nir first: the baseline
        out = tmp_path / f"{name}.npz"
        result = runner.invoke(main, ["simulate", str(tmp_path / "g.nir"), "--input", str(tmp_path / "x.npy"),
                                      "--out", str(out), "--semantics", name, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["semantics"] == ("nir" if name == "auto" else name)
        spikes = np.load(out)["lif"]
        if name == "nir":
            base = spikes
        d = dialects.named("nir" if name == "auto" else name)
        if nir.LIF not in d.neurons and d.rewrite is dialects.NIR.rewrite:
            np.testing.assert_array_equal(spikes, base)


def test_semantics_is_refused_for_fer2neuro_artifacts_and_checkpoints_options(tmp_path, active_small_model):
    from fer2neuro.model.checkpoint import save_checkpoint  # noqa: F401 - the API exists

    runner = CliRunner()
    result = runner.invoke(main, ["verify", str(tmp_path / "x.pt"), "--semantics", "norse"])
    assert result.exit_code != 0 and "--semantics applies to a NIR graph only" in result.output


@pytest.mark.lava
def test_lava_style_targets_run_a_dialect_only_where_lavas_lif_can():
    """Sinabs' dynamics (several spikes per step, >=, subtract reset) are
    refused in one line by every Lava-style target, on check as on run;
    Norse's LIF is NIR's after the rewrite and runs on lava, equal to nir."""
    from fer2neuro.errors import TargetError

    sinabs = dialects.apply(dense_lif_graph(dt=1.0), "sinabs")
    for name in ("lava", "lava-fixed", "loihi"):
        with pytest.raises(TargetError, match="sinabs semantics .* Lava's LIF does not have") as info:
            get_target(name).check(sinabs)
        assert "\n" not in str(info.value)
    norse = dialects.apply(dense_lif_graph(dt=1e-3, tau=2.5e-6), "norse")    # Norse writes tau*dt: dt/tau = 0.4
    x = spikes_in(batch=2, steps=15)
    want = get_target("nir").open(norse).run(x, dt=1e-3).outputs["lif"]
    got = get_target("lava").open(norse).run(x, dt=1e-3).outputs["lif"]
    assert want.sum() > 0
    np.testing.assert_array_equal(got, want)


def test_many_spikes_in_a_step_are_counted_past_255():
    """A Sinabs neuron emits floor(v / threshold) spikes in a step: counts
    above 255 are kept (uint16), not wrapped as uint8 would."""
    graph = dense_lif_graph(dt=1.0)
    graph.nodes["fc"].weight = np.full((5, 6), 1000.0)
    graph.nodes["fc"].bias = np.zeros(5)
    read = dialects.apply(graph, "sinabs")
    x = np.ones((1, 3, 6))
    for target in ("nir", "onnx"):
        spikes = get_target(target).open(read).run(x, dt=1.0).outputs["lif"]
        assert spikes.dtype == np.uint16 and spikes.max() > 255, (target, spikes.max())
        np.testing.assert_array_equal(spikes, get_target("nir").open(read).run(x, dt=1.0).outputs["lif"])


def test_verify_says_which_dt_it_assumed_for_a_graph_without_one(tmp_path):
    write_graph(dense_lif_graph(), tmp_path / "g.nir")
    runner = CliRunner()
    result = runner.invoke(main, ["verify", str(tmp_path / "g.nir"), "--targets", "onnx", "-n", "2", "-T", "5"])
    assert result.exit_code == 0, result.output
    assert "dt=1 (assumed: the graph gives no dt; give --dt)" in result.output
    result = runner.invoke(main, ["verify", str(tmp_path / "g.nir"), "--targets", "onnx", "-n", "2", "-T", "5",
                                  "--dt", "1", "--json"])
    assert json.loads(result.output)["dt_assumed"] is False


def recurrent_if_lif_graph(seed=0):
    """Input -> Affine -> LIF (with a recurrent Affine) -> Affine -> IF."""
    rng = np.random.default_rng(seed)
    n_in, n, m = 6, 5, 4
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "fc": nir.Affine(weight=rng.normal(0.5, 0.5, (n, n_in)), bias=rng.normal(0, 0.1, n)),
        "lif": nir.LIF(tau=np.full(n, 3.0), r=np.full(n, 1.0), v_leak=np.zeros(n), v_threshold=np.ones(n),
                       v_reset=np.zeros(n)),
        "rec": nir.Affine(weight=rng.normal(0, 0.4, (n, n)), bias=np.zeros(n)),
        "fc2": nir.Affine(weight=rng.normal(0.5, 0.5, (m, n)), bias=np.zeros(m)),
        "if": nir.IF(r=np.ones(m), v_threshold=np.ones(m), v_reset=np.zeros(m)),
        "output": nir.Output(output_type={"output": np.array([m])}),
    }
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "fc2"), ("fc2", "if"),
             ("if", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0}, type_check=False)


@pytest.mark.parametrize("name", dialects.PEERS)
@pytest.mark.parametrize("make", [dense_lif_graph, recurrent_if_lif_graph], ids=["dense", "recurrent"])
def test_the_onnx_target_runs_every_dialect_as_the_nir_target(name, make):
    """The nir and onnx targets step every dialect's neurons (and back
    edges) through the same functions: equal spikes, on a feed-forward and a
    recurrent graph with IF and LIF."""
    x = spikes_in(batch=3, steps=12)
    for gain in 10.0 ** np.arange(6):     # each dialect reads tau and r its own way: scale the weights until
        graph = make() if make is recurrent_if_lif_graph else make(dt=1.0)     # every layer spikes
        for fc in ("fc", "fc2"):
            if fc in graph.nodes:
                graph.nodes[fc].weight = graph.nodes[fc].weight * gain
        read = dialects.apply(graph, name)
        want = get_target("nir").open(read).run(x, dt=1.0)
        if all(want.outputs[k].any() for k in want.spiking):
            break
    got = get_target("onnx").open(read).run(x, dt=1.0)
    assert all(want.outputs[k].any() for k in want.spiking)
    for layer in want.spiking:
        np.testing.assert_array_equal(got.outputs[layer], want.outputs[layer], err_msg=f"{name} {layer}")


def test_export_for_a_peer_writes_its_file_or_refuses_in_one_line(tmp_path, active_checkpoint):
    """--for snntorch and --for norse write files that still mean the model
    in NIR (at the dt in their metadata); the peers that cannot represent it
    are refused in one line with nothing left behind; --for needs --target nir."""
    from fer2neuro.exporters.nir_export import model_to_nir
    from fer2neuro.model.checkpoint import load_model

    runner = CliRunner()
    model, _ = load_model(active_checkpoint, "cpu")
    original = model_to_nir(model)
    x = np.repeat(np.random.default_rng(0).random((2, 1, 1, 48, 48)), 6, axis=1)
    want = get_target("nir").open(original).run(x, dt=1.0)
    for peer in ("snntorch", "norse"):
        out = tmp_path / f"{peer}.nir"
        result = runner.invoke(main, ["export", str(active_checkpoint), "--target", "nir", "--for", peer,
                                      "--out", str(out), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["for"] == peer
        adapted = dialects.read(out)
        got = get_target("nir").open(adapted).run(x, dt=GraphInfo.of(adapted).dt)
        for layer in want.spiking:
            np.testing.assert_array_equal(got.outputs[layer], want.outputs[layer], err_msg=f"{peer} {layer}")
    for peer, words in (("sinabs", "Sinabs 3.1.3 cannot run node 'if1'"), ("rockpool", "cannot represent node"),
                        ("spyx", "Spyx cannot run 'if1'")):
        out = tmp_path / f"{peer}.nir"
        result = runner.invoke(main, ["export", str(active_checkpoint), "--target", "nir", "--for", peer,
                                      "--out", str(out)])
        assert result.exit_code == 1 and words in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not out.exists() and list(tmp_path.glob(f".{peer}*")) == []
    result = runner.invoke(main, ["export", str(active_checkpoint), "--target", "onnx", "--for", "norse",
                                  "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code != 0 and "--for applies to --target nir only" in result.output


@pytest.mark.skipif(python_of("norse") is None, reason="no Norse peer environment (make peer-norse)")
def test_a_layer_the_peer_drops_is_named_as_unsupported(tmp_path):
    """Norse's importer has no module for NIR's Threshold and its executor
    skips the node: interop says the layer was not recorded and names the
    cause "unsupported"; the LIF before it is compared as usual."""
    graph = dense_lif_graph(dt=1e-3, tau=1e-2)
    graph.nodes["spike"] = nir.Threshold(threshold=np.full(5, 0.5))
    graph.edges = [("input", "fc"), ("fc", "lif"), ("lif", "spike"), ("spike", "output")]
    write_graph(graph, tmp_path / "g.nir")
    np.save(tmp_path / "x.npy", spikes_in(steps=10))
    result = CliRunner().invoke(main, ["interop", str(tmp_path / "g.nir"), "--peers", "norse", "--json",
                                       "--input", str(tmp_path / "x.npy")])
    assert result.exit_code == 0, result.output
    peer = json.loads(result.output)["peers"]["norse"]
    assert peer["runs"], peer
    layers = {x["layer"]: x for x in peer["layers"]}
    assert layers["spike"]["equal"] is None and layers["lif"]["equal"] is not None
    assert peer["likely_causes"] == ["unsupported"], peer
    assert "built no module for spike" in peer["verdict"]
