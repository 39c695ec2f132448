"""Recurrent NIR graphs on the nir reference target: a back edge (the edge
that closes a cycle, chosen as ``describe.back_edges`` does) carries its
source's output of the previous step, zero at t = 0; the graph runs step by
step. Checked against hand-written numpy loops of the equations."""
import nir
import numpy as np
import pytest
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.errors import TargetError
from fer2neuro.nirgraph.file import write_graph
from fer2neuro.targets import get_target
from fer2neuro.targets.nir_reference import NIRReferenceTarget

N_IN, N_HID, N_OUT = 12, 8, 3


def full(shape, value):
    return np.full(shape, float(value))


def cuba_params(n, dt, rng, lava=False):
    """CubaLIF parameters scaled to dt (time constants of a few to tens of
    steps), varied per neuron, with a leak and a non-zero reset. ``lava``:
    what Lava's LIF can hold (one tau_syn, tau_mem and threshold per layer,
    reset to 0); r, w_in and v_leak still vary per neuron."""
    if lava:
        return dict(tau_syn=np.full(n, dt * rng.uniform(3, 6)), tau_mem=np.full(n, dt * rng.uniform(5, 12)),
                    r=rng.uniform(0.8, 1.5, n), v_leak=rng.uniform(-0.05, 0.05, n),
                    v_threshold=np.full(n, rng.uniform(0.8, 1.2)), v_reset=np.zeros(n), w_in=rng.uniform(1.0, 2.0, n))
    return dict(tau_syn=dt * rng.uniform(3, 6, n), tau_mem=dt * rng.uniform(5, 12, n),
                r=rng.uniform(0.8, 1.5, n), v_leak=rng.uniform(-0.05, 0.05, n),
                v_threshold=rng.uniform(0.8, 1.2, n), v_reset=rng.uniform(-0.1, 0.0, n),
                w_in=rng.uniform(1.0, 2.0, n))


def braille_like(dt, seed=0, rec_scale=1.0, lava=False, bias=True):
    """The NIR paper's Braille RNN, small: Input -> Affine -> CubaLIF, with a
    recurrent Affine from the CubaLIF back into it, -> Affine -> CubaLIF -> Output.
    ``lava``: neuron parameters Lava's LIF can hold; ``bias``: Affine biases."""
    rng = np.random.default_rng(seed)
    b = 1.0 if bias else 0.0
    nodes = {"input": nir.Input(input_type={"input": np.array([N_IN])}),
             "fc1": nir.Affine(weight=rng.normal(0.4, 0.6, (N_HID, N_IN)), bias=b * rng.normal(0, 0.1, N_HID)),
             "lif1": nir.CubaLIF(**cuba_params(N_HID, dt, rng, lava)),
             "rec": nir.Affine(weight=rec_scale * rng.normal(0, 0.8, (N_HID, N_HID)),
                               bias=b * rec_scale * rng.normal(0, 0.1, N_HID)),
             "fc2": nir.Affine(weight=rng.normal(0.6, 0.6, (N_OUT, N_HID)), bias=full(N_OUT, 0.1 * b)),
             "lif2": nir.CubaLIF(**cuba_params(N_OUT, dt, rng, lava)),
             "output": nir.Output(output_type={"output": np.array([N_OUT])})}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "rec"), ("rec", "lif1"), ("lif1", "fc2"),
             ("fc2", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def spikes_in(batch=4, steps=40, seed=1):
    return (np.random.default_rng(seed).uniform(size=(batch, steps, N_IN)) < 0.5).astype(np.float64)


def reference_braille(graph, x, dt):
    """The same network by hand: forward Euler as written in equations.py's
    docstring, rec -> lif1 delayed by one step (zero at t = 0)."""
    n = graph.nodes
    w1, b1, wr, br, w2, b2 = (np.asarray(a, dtype=np.float64) for a in
                              (n["fc1"].weight, n["fc1"].bias, n["rec"].weight, n["rec"].bias,
                               n["fc2"].weight, n["fc2"].bias))

    def cuba_lif(node, i, v, current):
        p = {k: np.asarray(getattr(node, k), dtype=np.float64) for k in
             ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in")}
        i = i + (dt / p["tau_syn"]) * (p["w_in"] * current - i)        # i[t] = i[t-1] + dt/tau_syn (w_in I - i)
        v_pre = v + (dt / p["tau_mem"]) * (p["v_leak"] - v + p["r"] * i)  # v' = v + dt/tau_mem (v_leak - v + r i[t])
        s = v_pre > p["v_threshold"]
        return s, i, np.where(s, p["v_reset"], v_pre)

    batch, steps = x.shape[:2]
    i1, v1 = np.zeros((batch, N_HID)), np.zeros((batch, N_HID))
    i2, v2 = np.zeros((batch, N_OUT)), np.zeros((batch, N_OUT))
    rec_prev = None
    out = {k: np.zeros((batch, steps, N_HID if k.startswith("lif1") else N_OUT))
           for k in ("lif1", "lif1.i", "lif1.v", "lif2", "lif2.i", "lif2.v")}
    for t in range(steps):
        fc1 = x[:, t] @ w1.T + b1
        current1 = fc1 if rec_prev is None else fc1 + rec_prev
        s1, i1, v1 = cuba_lif(n["lif1"], i1, v1, current1)
        s1 = s1.astype(np.float64)
        rec_prev = s1 @ wr.T + br
        fc2 = s1 @ w2.T + b2
        s2, i2, v2 = cuba_lif(n["lif2"], i2, v2, fc2)
        for key, value in (("lif1", s1), ("lif1.i", i1), ("lif1.v", v1), ("lif2", s2), ("lif2.i", i2),
                           ("lif2.v", v2)):
            out[key][:, t] = value
    return out


@pytest.mark.parametrize("dt", [1e-4, 0.5])
def test_braille_rnn_equals_a_hand_written_loop(dt):
    graph, x = braille_like(dt), spikes_in(batch=4)     # an even batch: BLAS rounds its rows as the target's
    rec = NIRReferenceTarget().run(graph, x, dt=dt, record_states=True)
    want = reference_braille(graph, x, dt)
    assert rec.spiking == ("lif1", "lif2")
    assert rec.outputs["lif1"].sum() > 0 and rec.outputs["lif2"].sum() > 0
    assert rec.outputs["lif1"].dtype == np.uint8
    for key in ("lif1", "lif2"):
        np.testing.assert_array_equal(rec.outputs[key], want[key])
    np.testing.assert_array_equal(rec.output, want["lif2"])
    for key in ("lif1.i", "lif1.v", "lif2.i", "lif2.v"):
        np.testing.assert_array_equal(rec.states[key], want[key])
    # the recurrence matters: without it the spikes differ
    plain = NIRReferenceTarget().run(braille_like(dt, rec_scale=0.0), x, dt=dt)
    assert not np.array_equal(plain.outputs["lif1"], rec.outputs["lif1"])


def test_recording_and_batch_chunks_as_for_acyclic_graphs():
    dt = 0.5
    graph, x = braille_like(dt), spikes_in(batch=5, steps=12)
    target = NIRReferenceTarget()
    whole = target.run(graph, x, dt=dt, record="all", record_states=True)
    assert set(whole.outputs) == {"input", "fc1", "lif1", "rec", "fc2", "lif2", "output"}
    assert whole.outputs["rec"].dtype == np.float64 and whole.outputs["output"].dtype == np.uint8
    chunked = target.run(graph, x, dt=dt, record="all", record_states=True, batch_size=2)
    for name in whole.outputs:
        np.testing.assert_array_equal(chunked.outputs[name], whole.outputs[name])
    for name in whole.states:
        np.testing.assert_array_equal(chunked.states[name], whole.states[name])
    single = target.run(graph, x[3], dt=dt)
    np.testing.assert_array_equal(single.output[0], whole.output[3])
    picked = target.run(graph, x, dt=dt, record=["rec"])
    assert set(picked.outputs) == {"rec"}
    np.testing.assert_array_equal(picked.outputs["rec"], whole.outputs["rec"])
    # rec's output reaches lif1 one step later: at t = 0 lif1's synaptic input is fc1 alone
    w_in = np.asarray(graph.nodes["lif1"].w_in)
    tau_syn = np.asarray(graph.nodes["lif1"].tau_syn)
    np.testing.assert_array_equal(whole.states["lif1.i"][:, 0],
                                  0 + (dt / tau_syn) * (w_in * whole.outputs["fc1"][:, 0] - 0))


def lif(n, tau=2.0, threshold=1.0):
    return nir.LIF(tau=full(n, tau), r=full(n, 1), v_leak=full(n, 0), v_threshold=full(n, threshold),
                   v_reset=full(n, 0))


def lif_loop(v, current, tau=2.0, threshold=1.0, dt=1.0):
    v_pre = v + (dt / tau) * (0.0 - v + 1.0 * current)
    s = v_pre > threshold
    return s.astype(np.float64), np.where(s, 0.0, v_pre)


@pytest.mark.parametrize("via", ["scale", "linear", "self"])
def test_a_neuron_feeding_itself(via):
    """LIF -> Scale (or Linear) -> the same LIF, or an edge from the LIF to itself."""
    scale = np.array([0.9, -0.6])
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}), "lif": lif(2),
             "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "lif"), ("lif", "output")]
    if via == "self":
        edges.append(("lif", "lif"))
        scale = np.ones(2)
    else:
        nodes["w"] = nir.Scale(scale=scale) if via == "scale" else nir.Linear(weight=np.diag(scale))
        edges += [("lif", "w"), ("w", "lif")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    x = np.random.default_rng(3).uniform(0.5, 2.5, (2, 30, 2))
    rec = NIRReferenceTarget().run(graph, x, record_states=True)
    v, prev = np.zeros((2, 2)), np.zeros((2, 2))
    want_s, want_v = np.zeros_like(x), np.zeros_like(x)
    for t in range(x.shape[1]):
        s, v = lif_loop(v, x[:, t] + prev * scale)
        prev = s
        want_s[:, t], want_v[:, t] = s, v
    assert rec.output.sum() > 0
    np.testing.assert_array_equal(rec.output, want_s)
    np.testing.assert_array_equal(rec.states["lif.v"], want_v)


def test_a_two_neuron_cycle():
    """input -> a -> b -> a: the walk from the Input reaches a, then b, so
    b -> a is the back edge; a sees b's spikes a step late, b sees a's at once."""
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "a": lif(3, tau=2.0), "b": lif(3, tau=3.0, threshold=0.5),
             "output": nir.Output(output_type={"output": np.array([3])})}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "a"), ("a", "b"), ("b", "a"), ("b", "output")],
                         type_check=False)
    x = np.random.default_rng(4).uniform(0, 2.2, (2, 25, 3))
    rec = NIRReferenceTarget().run(graph, x, record="all", record_states=True)
    va, vb, sb_prev = np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3))
    want = {k: np.zeros_like(x) for k in ("a", "b", "a.v", "b.v")}
    for t in range(x.shape[1]):
        sa, va = lif_loop(va, x[:, t] + sb_prev, tau=2.0)
        sb, vb = lif_loop(vb, sa, tau=3.0, threshold=0.5)
        sb_prev = sb
        for key, value in (("a", sa), ("b", sb), ("a.v", va), ("b.v", vb)):
            want[key][:, t] = value
    assert rec.outputs["a"].sum() > 0 and rec.outputs["b"].sum() > 0
    for key in ("a", "b"):
        np.testing.assert_array_equal(rec.outputs[key], want[key])
        np.testing.assert_array_equal(rec.states[f"{key}.v"], want[f"{key}.v"])
    np.testing.assert_array_equal(rec.output, want["b"])


def test_an_acyclic_graph_takes_the_whole_sequence_path_unchanged():
    """No back edge: the fast path. Its results equal the step-by-step path's,
    and a recurrent weight of zero gives the acyclic network's results."""
    dt = 0.5
    rng = np.random.default_rng(7)
    nodes = {"input": nir.Input(input_type={"input": np.array([N_IN])}),
             "fc1": nir.Affine(weight=rng.normal(0.4, 0.6, (N_HID, N_IN)), bias=rng.normal(0, 0.1, N_HID)),
             "lif1": nir.CubaLIF(**cuba_params(N_HID, dt, rng)),
             "fc2": nir.Affine(weight=rng.normal(0.6, 0.6, (N_OUT, N_HID)), bias=full(N_OUT, 0.1)),
             "lif2": nir.CubaLIF(**cuba_params(N_OUT, dt, rng)),
             "output": nir.Output(output_type={"output": np.array([N_OUT])})}
    order = list(nodes)
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)
    target, x = NIRReferenceTarget(), spikes_in()
    flat, order, back = target.compile(graph)
    assert back == set()
    fast = target.run(graph, x, dt=dt, record="all", record_states=True)
    assert fast.output.sum() > 0
    keep = list(order)
    stepped, states = target._run_steps(flat, order, back, {"input": x}, dt, keep, True)
    for name in fast.outputs:
        np.testing.assert_array_equal(stepped[name], fast.outputs[name])
    for name in fast.states:
        np.testing.assert_array_equal(states[name], fast.states[name])

    recurrent = braille_like(dt, rec_scale=0.0)
    plain = nir.NIRGraph(nodes={k: v for k, v in recurrent.nodes.items() if k != "rec"},
                         edges=[e for e in recurrent.edges if "rec" not in e], type_check=False)
    assert target.compile(plain)[2] == set() and target.compile(recurrent)[2] == {3}
    a = target.run(recurrent, x, dt=dt, record_states=True)
    b = target.run(plain, x, dt=dt, record_states=True)
    for name in ("lif1", "lif2", "output"):
        np.testing.assert_array_equal(a.outputs[name], b.outputs[name])
    for name in b.states:
        np.testing.assert_array_equal(a.states[name], b.states[name])


def test_lava_style_targets_name_what_they_cannot_hold():
    graph = braille_like(0.5)          # per-neuron time constants and thresholds, a reset below 0
    for name in ("lava", "lava-fixed", "loihi"):
        with pytest.raises(TargetError, match="one .* per layer|resets to 0"):
            get_target(name).check(graph)
    get_target("onnx").check(graph)                 # the onnx lowering unrolls cycles step by step
    NIRReferenceTarget().check(graph)
    assert NIRReferenceTarget().open(graph).layers == ("lif1", "lif2")


def test_the_command_line_simulates_and_inspects_a_recurrent_graph(tmp_path):
    dt = 1e-4
    # 8 rows: the target pads a frame's rows to FRAME_ROWS, and BLAS rounds by the row count
    graph, x = braille_like(dt), spikes_in(batch=8, steps=30)
    write_graph(graph, tmp_path / "rnn.nir")
    np.save(tmp_path / "x.npy", x)
    runner = CliRunner()
    result = runner.invoke(main, ["simulate", str(tmp_path / "rnn.nir"), "--target", "nir", "--dt", str(dt),
                                  "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npz"),
                                  "--membranes"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    y = np.load(tmp_path / "y.npz")
    want = reference_braille(graph, x, dt)
    assert y["lif1"].sum() > 0
    for key in ("lif1", "lif2", "lif1.v", "lif2.v"):
        np.testing.assert_array_equal(y[key], want[key])
    np.testing.assert_array_equal(y["output"], want["lif2"])

    refused = runner.invoke(main, ["simulate", str(tmp_path / "rnn.nir"), "--target", "lava",
                                   "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "z.npz")])
    assert refused.exit_code != 0
    assert refused.exception is None or isinstance(refused.exception, SystemExit)
    assert "node 'lif1' (CubaLIF): Lava's LIF resets to 0" in refused.stderr     # v_reset < 0 here
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert not (tmp_path / "z.npz").exists()

    inspected = runner.invoke(main, ["inspect", str(tmp_path / "rnn.nir")], catch_exceptions=False)
    assert inspected.exit_code == 0, inspected.output
    lines = inspected.stdout.splitlines()
    assert any(line.split() == ["nir", "yes"] for line in lines), inspected.stdout
    assert any(line.split()[:2] == ["lava", "no:"] and "resets to 0" in line for line in lines), inspected.stdout
    assert "rec -> lif1   back edge: closes a cycle" in inspected.stdout
