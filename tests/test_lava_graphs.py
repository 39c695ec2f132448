"""Graphs fer2neuro did not train, on the Lava-style targets: recurrent
layers (the NIR paper's Braille RNN, small), chains of stateless nodes
composed into one synapse (the NIR paper's Sinabs CNN: SumPool2d -> Conv2d),
and every spiking NIR neuron (IF, LIF, CubaLIF, Threshold). The float lava
target must equal the nir target spike for spike; the fixed-point targets
are compared with each other bit for bit and with nir as agreement."""
import nir
import numpy as np
import pytest

from fer2neuro.errors import TargetError
from fer2neuro.lowering.lava_plan import build_plan
from fer2neuro.lowering.quantise import quantise
from fer2neuro.lowering.synapse_chain import compose_chain
from fer2neuro.nirgraph import ops
from fer2neuro.targets import get_target


def run(target, graph, x, dt=1.0):
    return get_target(target).run(graph, x, dt=dt)


# --- recurrent layers ----------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_braille_rnn_on_lava_equals_nir_and_a_hand_written_loop(bias, H):
    dt = 1e-4
    graph, x = H.braille_like(dt, lava=True, bias=bias), H.spikes_in(batch=2, steps=30)
    lava, ref = run("lava", graph, x, dt), run("nir", graph, x, dt)
    hand = H.reference_braille(graph, x, dt)
    for name in ("lif1", "lif2"):
        assert ref.outputs[name].sum() > 10, f"{name} hardly spikes: the test would prove little"
        np.testing.assert_array_equal(lava.outputs[name], ref.outputs[name])
        np.testing.assert_array_equal(lava.outputs[name], hand[name])
    np.testing.assert_array_equal(lava.output, ref.output)
    # the recurrent Dense matters: without it lif1 spikes differently
    plain = run("nir", H.braille_like(dt, lava=True, bias=bias, rec_scale=0.0), x, dt)
    assert not np.array_equal(plain.outputs["lif1"], lava.outputs["lif1"])


def test_the_recurrent_synapse_becomes_a_recurrent_dense_with_a_late_bias(H):
    dt = 1e-4
    graph = H.braille_like(dt, lava=True)
    plan = build_plan(graph, direct=False, dt=dt)
    first, second = plan.layers
    assert first.recurrent is not None and first.recurrent_synapse == "rec" and second.recurrent is None
    node = graph.nodes["lif1"]
    du, dv = dt / node.tau_syn[0], dt / node.tau_mem[0]
    assert first.du == pytest.approx(du) and first.dv == pytest.approx(dv)
    gain = du * dv * node.r * node.w_in
    np.testing.assert_allclose(first.recurrent, graph.nodes["rec"].weight * gain[:, None])
    steps = first.bias_steps()
    assert [step for step, *_ in steps] == [first.depth, first.depth + 1]
    # a synapse bias into a CubaLIF goes on as v bias b/du with u shifted by -b/du
    fc1_current = graph.nodes["fc1"].bias * gain
    np.testing.assert_allclose(steps[0][2], -fc1_current / du)
    np.testing.assert_allclose(steps[1][2], -graph.nodes["rec"].bias * gain / du)


def test_recurrence_across_layers_is_refused_with_the_nodes_named(H):
    graph = H.braille_like(0.5, lava=True)
    graph.edges.remove(("rec", "lif1"))
    graph.edges.append(("lif2", "rec"))
    graph.edges.remove(("lif1", "rec"))
    graph.edges.append(("rec", "lif1"))
    graph.nodes["rec"] = nir.Affine(weight=np.ones((H.N_HID, H.N_OUT)), bias=np.zeros(H.N_HID))
    with pytest.raises(TargetError, match="spans layers"):
        get_target("lava").check(graph)


def test_braille_rnn_on_fixed_point_is_bit_exact_between_lava_and_loihi(H):
    """The Braille-like RNN on both fixed-point targets: the recurrent Dense
    is netx's dense_rec block."""
    dt = 1e-4
    graph, x = H.braille_like(dt, lava=True, bias=False), H.spikes_in(batch=2, steps=30)
    ref, fixed, loihi = run("nir", graph, x, dt), run("lava-fixed", graph, x, dt), run("loihi", graph, x, dt)
    for name in ("lif1", "lif2"):
        assert ref.outputs[name].sum() > 10, name
        np.testing.assert_array_equal(fixed.outputs[name], loihi.outputs[name])
        assert (loihi.outputs[name] == ref.outputs[name]).mean() > 0.95, name
    plain = run("loihi", H.braille_like(dt, lava=True, bias=False, rec_scale=0.0), x, dt)
    assert not np.array_equal(plain.outputs["lif1"], loihi.outputs["lif1"])


def recurrent_lif(seed=0, n=8):
    """Affine -> LIF with a recurrent Affine whose bias is not zero: on the
    fixed-point targets too, that bias must wait one step (a back edge
    carries nothing at t = 0)."""
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(input_type={"input": np.array([H_N_IN])}),
             "fc1": nir.Affine(weight=rng.normal(0.3, 0.5, (n, H_N_IN)), bias=rng.normal(0, 0.1, n)),
             "lif1": nir.LIF(tau=np.full(n, 2.0), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                             v_reset=np.zeros(n)),
             "rec": nir.Affine(weight=rng.normal(0, 0.5, (n, n)), bias=rng.normal(0.3, 0.1, n)),
             "output": nir.Output(output_type={"output": np.array([n])})}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "rec"), ("rec", "lif1"), ("lif1", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


H_N_IN = 12


def test_a_recurrent_bias_waits_one_step_on_every_target(H):
    graph, x = recurrent_lif(), H.spikes_in(batch=2, steps=20)
    ref = run("nir", graph, x)
    assert ref.outputs["lif1"].sum() > 20
    np.testing.assert_array_equal(run("lava", graph, x).outputs["lif1"], ref.outputs["lif1"])
    fixed, loihi = run("lava-fixed", graph, x), run("loihi", graph, x)
    np.testing.assert_array_equal(fixed.outputs["lif1"], loihi.outputs["lif1"])
    agreement = (loihi.outputs["lif1"] == ref.outputs["lif1"]).mean()
    assert agreement > 0.95, agreement
    # the rule matters: the same bias on from the layer's first step is another network
    early = recurrent_lif()
    early.nodes["fc1"] = nir.Affine(weight=early.nodes["fc1"].weight,
                                    bias=early.nodes["fc1"].bias + early.nodes["rec"].bias)
    early.nodes["rec"] = nir.Affine(weight=early.nodes["rec"].weight, bias=np.zeros(8))
    assert not np.array_equal(run("nir", early, x).outputs["lif1"], ref.outputs["lif1"])


def test_a_synapse_bias_into_a_cubalif_on_fixed_point_is_a_staged_shift_of_u(H):
    """The file holds the v bias b/du; both fixed-point runners shift u by
    -b/du when it goes on (quantise.integer_bias_stages). Lava's own models
    (lava-fixed, u written through its Var) and loihi agree bit for bit, and
    the shift brings them closer to nir than the v bias alone."""
    from fer2neuro.targets.loihi.simulator import simulate

    dt = 1e-4
    graph, x = H.braille_like(dt, lava=True, bias=True), H.spikes_in(batch=4, steps=40)
    ref, fixed, loihi = run("nir", graph, x, dt), run("lava-fixed", graph, x, dt), run("loihi", graph, x, dt)
    program = get_target("loihi").open(graph)
    _, layers, names = program.integer_layers(False, dt)
    assert all(shift is not None for _, _, shift in layers[0].stages)        # fc1's bias, then rec's
    for layer in layers:
        layer.stages = [(after, bias, None) for after, bias, _ in layer.stages]
    unshifted = simulate(layers, names, input_bias=None, input_spikes=x.astype(np.uint8), timesteps=x.shape[1])
    for name in ("lif1", "lif2"):
        np.testing.assert_array_equal(fixed.outputs[name], loihi.outputs[name])
        agreement = (loihi.outputs[name] == ref.outputs[name]).mean()
        assert agreement > 0.93, (name, agreement)                      # measured 0.956, 0.967
        assert (unshifted[name] == ref.outputs[name]).mean() < agreement - 0.05, name   # measured 0.860, 0.865


# --- chains of stateless nodes ----------------------------------------------------

def conv(out_c, in_c, k, rng, bias=True, padding=1, scale=0.5):
    return nir.Conv2d(input_shape=None, weight=rng.normal(0.15, scale, (out_c, in_c, k, k)), stride=1,
                      padding=padding, dilation=1, groups=1,
                      bias=rng.normal(0, 0.1, out_c) if bias else np.zeros(out_c))


def if_node(shape, threshold=1.0):
    return nir.IF(r=np.ones(shape), v_threshold=np.full(shape, threshold), v_reset=np.zeros(shape))


def sinabs_like(seed=0):
    """Input -> Conv2d -> IF -> SumPool2d -> Conv2d -> LIF -> Flatten ->
    Affine -> IF: the NIR paper's Sinabs CNN pattern (a pool feeding a conv
    with no neuron between)."""
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(input_type={"input": np.array([2, 12, 12])}),
             "conv1": conv(4, 2, 3, rng),
             "if1": if_node((4, 12, 12)),
             "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "conv2": conv(6, 4, 3, rng, scale=0.4),
             "lif2": nir.LIF(tau=np.full((6, 6, 6), 2.0), r=np.ones((6, 6, 6)), v_leak=np.zeros((6, 6, 6)),
                             v_threshold=np.ones((6, 6, 6)), v_reset=np.zeros((6, 6, 6))),
             "flat": nir.Flatten(start_dim=0, end_dim=-1, input_type={"input": np.array([6, 6, 6])}),
             "fc": nir.Affine(weight=rng.normal(0.05, 0.15, (5, 216)), bias=rng.normal(0, 0.1, 5)),
             "if3": if_node(5),
             "output": nir.Output(output_type={"output": np.array([5])})}
    edges = [("input", "conv1"), ("conv1", "if1"), ("if1", "pool"), ("pool", "conv2"), ("conv2", "lif2"),
             ("lif2", "flat"), ("flat", "fc"), ("fc", "if3"), ("if3", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def spike_frames(shape, batch=2, steps=8, rate=0.4, seed=3):
    return (np.random.default_rng(seed).uniform(size=(batch, steps, *shape)) < rate).astype(np.float64)


def test_sumpool_then_conv_runs_spike_exact_on_lava():
    graph, x = sinabs_like(), spike_frames((2, 12, 12))
    plan = build_plan(graph, direct=False)
    assert [layer.synapse for layer in plan.layers] == ["conv1", "pool+conv2", "fc"]
    composed = plan.layers[1]
    assert composed.kind == "conv" and composed.conv["stride"] == (2, 2) and composed.weight.shape[2:] == (6, 6)
    lava, ref = run("lava", graph, x), run("nir", graph, x)
    for name in ("if1", "lif2", "if3"):
        assert ref.outputs[name].sum() > 0, name
        np.testing.assert_array_equal(lava.outputs[name], ref.outputs[name])


def chain_input(shape, seed=0):
    return np.random.default_rng(seed).normal(size=(3, *shape))


@pytest.mark.parametrize("nodes", [
    ["pool", "conv"],
    ["avg", "conv"],
    ["scale", "conv", "avg"],
    ["conv", "flat", "fc"],
    ["pool", "flat", "fc"],
    ["scale", "avg", "flat", "fc"],
])
def test_a_chain_composes_into_one_synapse_that_computes_the_chain(nodes):
    rng = np.random.default_rng(1)
    parts = {"pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "avg": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "scale": nir.Scale(scale=rng.uniform(0.5, 2.0, (3, 1, 1))),
             "conv": conv(3, 3, 3, rng),
             "flat": nir.Flatten(start_dim=0, end_dim=-1, input_type={"input": np.array([3, 4, 4])})}
    chain = [parts[n] for n in nodes if n != "fc"]
    shape = (3, 8, 8)
    probe = np.zeros((1, *shape))
    for node in chain:
        probe = ops.apply_linear(node, probe)
    if "fc" in nodes:
        chain.append(nir.Affine(weight=rng.normal(size=(4, probe.shape[1])), bias=rng.normal(size=4)))
    synapse = compose_chain(list(nodes), chain, shape, repr)
    assert synapse.kind == ("dense" if "fc" in nodes else "conv")
    x = chain_input(shape)
    want = x
    for node in chain:
        want = ops.apply_linear(node, want)
    from fer2neuro.lowering.synapse_chain import apply_synapse
    np.testing.assert_allclose(apply_synapse(synapse, x), want, rtol=1e-12, atol=1e-12)


def test_a_chain_that_cannot_be_composed_exactly_is_refused():
    rng = np.random.default_rng(0)
    first = conv(3, 3, 3, rng, bias=True, padding=0)     # its bias is not zero where the next conv pads
    second = conv(3, 3, 3, rng, padding=1)
    with pytest.raises(TargetError, match="cannot be composed into one convolution exactly"):
        compose_chain(["a", "b"], [first, second], (3, 8, 8), repr)


def test_conv_flatten_affine_chain_runs_on_lava_and_fixed_point():
    rng = np.random.default_rng(4)
    nodes = {"input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
             "conv1": conv(4, 2, 3, rng),
             "if1": if_node((4, 8, 8)),
             "conv2": conv(3, 4, 3, rng, padding=0, scale=0.3),
             "flat": nir.Flatten(start_dim=0, end_dim=-1, input_type={"input": np.array([3, 6, 6])}),
             "fc": nir.Affine(weight=rng.normal(0.0, 0.2, (6, 108)), bias=rng.normal(0, 0.1, 6)),
             "thr": nir.Threshold(threshold=np.full(6, 0.8)),
             "output": nir.Output(output_type={"output": np.array([6])})}
    edges = [("input", "conv1"), ("conv1", "if1"), ("if1", "conv2"), ("conv2", "flat"), ("flat", "fc"),
             ("fc", "thr"), ("thr", "output")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    x = spike_frames((2, 8, 8), steps=6)
    plan = build_plan(graph, direct=False)
    assert [layer.synapse for layer in plan.layers] == ["conv1", "conv2+fc"]
    assert plan.layers[1].kind == "dense" and plan.layers[1].flatten_input
    ref, lava = run("nir", graph, x), run("lava", graph, x)
    assert 0 < ref.outputs["thr"].sum() < ref.outputs["thr"].size
    for name in ("if1", "thr"):
        np.testing.assert_array_equal(lava.outputs[name], ref.outputs[name])
    fixed, loihi = run("lava-fixed", graph, x), run("loihi", graph, x)
    for name in ("if1", "thr"):
        np.testing.assert_array_equal(fixed.outputs[name], loihi.outputs[name])
        assert (loihi.outputs[name] == ref.outputs[name]).mean() > 0.95


# --- neurons on fixed point -----------------------------------------------------

def test_cubalif_and_threshold_quantise_to_loihi_decays(H):
    dt = 1e-4
    graph = H.braille_like(dt, lava=True, bias=False)
    network = quantise(graph, direct=False, dt=dt)
    layer, q = network.plan.layers[0], network.layers[0]
    assert q.i_decay == round(4096 * layer.du) and q.v_decay == round(4096 * layer.dv)
    assert 0 < q.i_decay < 4096 and q.recurrent is not None and (q.recurrent % 2 == 0).all()
    assert np.abs(q.recurrent).max() <= 254 and np.abs(q.weight).max() <= 254
    # a time constant beyond 12 bits of decay is a clear error naming the layer
    slow = H.braille_like(dt, lava=True, bias=False)
    slow.nodes["lif2"] = nir.CubaLIF(**{**{k: getattr(slow.nodes["lif2"], k) for k in
                                           ("tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in")},
                                        "tau_syn": np.full(H.N_OUT, dt * 10000)})
    with pytest.raises(TargetError, match="layer lif2: du = .* rounds to 0 in Loihi's 12-bit decay"):
        quantise(slow, direct=False, dt=dt)


def tiny_dense(weight_value, n_in=1000, seed=0):
    """Input -> Linear -> IF where each weight is a small fraction of the
    threshold (a thousand inputs, ~14 steps of input per spike)."""
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "fc": nir.Linear(weight=weight_value * rng.uniform(0.2, 1.0, (6, n_in))),
             "if1": if_node(6),
             "output": nir.Output(output_type={"output": np.array([6])})}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "if1"), ("if1", "output")], type_check=False)


def test_a_dense_layer_held_down_by_its_threshold_gets_a_weight_exponent():
    """Weights 5000 times below the threshold: at the 17-bit threshold's
    scale they would keep 4 bits; with the exponent -4 they keep all 8 and
    the sum is shifted right by 4, on lava-fixed (Lava's Dense, its
    weight_exp raised) and loihi alike."""
    graph = tiny_dense(2e-4)
    network = quantise(graph, direct=False)
    q = network.layers[0]
    assert q.weight_exp == -4 and 128 <= np.abs(q.weight).max() <= 254
    x = spike_frames((1000,), batch=2, steps=40, rate=0.6)
    ref, fixed, loihi = run("nir", graph, x), run("lava-fixed", graph, x), run("loihi", graph, x)
    assert ref.outputs["if1"].sum() > 10
    np.testing.assert_array_equal(fixed.outputs["if1"], loihi.outputs["if1"])
    with_exponent = (loihi.outputs["if1"] == ref.outputs["if1"]).mean()
    assert with_exponent > 0.97, with_exponent
    # an ordinary layer keeps exponent 0 (its weights already use their 8 bits)
    assert quantise(tiny_dense(0.5), direct=False).layers[0].weight_exp == 0


def tiny_conv(weight_value):
    nodes = {"input": nir.Input(input_type={"input": np.array([1, 6, 6])}),
             "conv": nir.Conv2d(input_shape=None, weight=np.full((2, 1, 3, 3), weight_value), stride=1, padding=1,
                                dilation=1, groups=1, bias=np.zeros(2)),
             "c1": if_node((2, 6, 6)),
             "output": nir.Output(output_type={"output": np.array([2, 6, 6])})}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "conv"), ("conv", "c1"), ("c1", "output")], type_check=False)


def test_weights_that_vanish_against_the_threshold_are_a_clear_error():
    with pytest.raises(TargetError, match="layer if1: every weight rounds to 0 .* and a weight exponent of -8"):
        quantise(tiny_dense(1e-12), direct=False)
    with pytest.raises(TargetError, match="layer c1: every weight rounds to 0 .* 8-bit weights\\)"):
        quantise(tiny_conv(1e-9), direct=False)


# --- non-spiking readouts ------------------------------------------------------

def readout_graph(kind, seed=0, n=5):
    """Affine -> LIF -> Linear -> a non-spiking readout (I, LI or CubaLI)."""
    rng = np.random.default_rng(seed)
    readout = {"LI": lambda: nir.LI(tau=np.full(n, 4.0), r=rng.uniform(0.8, 1.2, n), v_leak=np.full(n, 0.05)),
               "CubaLI": lambda: nir.CubaLI(tau_syn=np.full(n, 3.0), tau_mem=np.full(n, 5.0), r=np.ones(n),
                                            v_leak=np.zeros(n), w_in=np.full(n, 1.5)),
               "I": lambda: nir.I(r=np.full(n, 0.5))}[kind]()
    nodes = {"input": nir.Input(input_type={"input": np.array([10])}),
             "fc1": nir.Affine(weight=rng.normal(0.3, 0.5, (8, 10)), bias=rng.normal(0, 0.1, 8)),
             "lif1": nir.LIF(tau=np.full(8, 2.0), r=np.ones(8), v_leak=np.zeros(8), v_threshold=np.ones(8),
                             v_reset=np.zeros(8)),
             "fc2": nir.Linear(weight=rng.normal(0, 0.5, (n, 8))),
             "out": readout,
             "output": nir.Output(output_type={"output": np.array([n])})}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "out"), ("out", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


@pytest.mark.parametrize("kind", ["LI", "CubaLI", "I"])
def test_a_non_spiking_readout_is_read_out_as_v(kind):
    graph = readout_graph(kind)
    x = spike_frames((10,), batch=2, steps=12, rate=0.5)
    ref = run("nir", graph, x)
    lava, fixed, loihi = run("lava", graph, x), run("lava-fixed", graph, x), run("loihi", graph, x)
    scale = np.abs(ref.output).max()
    assert scale > 0.1
    for rec in (lava, fixed, loihi):
        assert rec.spiking == ("lif1",) and rec.output.dtype == np.float64 and rec.output.shape == ref.output.shape
    np.testing.assert_allclose(lava.output, ref.output, rtol=0, atol=1e-12 * scale)
    np.testing.assert_array_equal(fixed.output, loihi.output)          # the same integers, scaled back alike
    np.testing.assert_array_equal(fixed.outputs["lif1"], loihi.outputs["lif1"])
    error = np.abs(loihi.output - ref.output).mean() / scale
    assert error < 0.1, error
    assert not np.allclose(loihi.output, 0)


def test_a_readout_must_be_the_last_layer():
    graph = readout_graph("LI")
    graph.nodes["lif1"] = nir.LI(tau=np.full(8, 2.0), r=np.ones(8), v_leak=np.zeros(8))
    with pytest.raises(TargetError, match=r"node 'lif1' \(LI\) does not spike: .* can only be the last layer"):
        get_target("lava").check(graph)
