"""The ``loihi`` target: Lava's bit-accurate fixed-point network, batched.

It runs the same ``network.net`` that ``lava-fixed`` runs, with the same
schedule (synapses delay by one step, each bias switched on when its layer's
first input arrives, T + depth steps), but for a whole batch at once with
integer tensors: no Lava processes, no Python loop over samples or neurons.
Synaptic sums are computed by torch (conv2d, matmul) in float32 when no
partial sum can reach 2^24 (sum of |weights| per neuron below it: every
integer up to 2^24 is exact in float32), else in float64 (exact below
2^53); everything else is int64 numpy, in arithmetic.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from fer2neuro.progress import progress_bar

from fer2neuro.errors import TargetError
from fer2neuro.lowering.lava_plan import MAX_LAVA_GROUPS
from fer2neuro.lowering.netx_file import NetxNetwork
from fer2neuro.nirgraph.flat import flatten_graph
from fer2neuro.targets.base import Arithmetic, Program, Recording, TargetOptions, prepare_inputs
from fer2neuro.targets.lava.alignment import align, run_steps
from fer2neuro.targets.lava.target import FixedPointTarget, IntegerNetworks, chain_layers, check_record, input_mode
from fer2neuro.targets.loihi import arithmetic as ar
from fer2neuro.targets.loihi.network import NETX_BIAS_EXP, LoihiLayer, exact_float, load_netx


def _dense_sum(weight: torch.Tensor, x: np.ndarray) -> np.ndarray:
    """Exact integer sums (B, out) of 0/1 inputs x (B, in)."""
    return (torch.from_numpy(x).to(weight.dtype) @ weight.T).numpy().astype(np.int64)


def _synapse(layer: LoihiLayer, spikes: np.ndarray) -> np.ndarray:
    """Integer synaptic input (B, *shape) from the previous layer's spikes."""
    batch = spikes.shape[0]
    w = layer.torch_weight
    if layer.kind == "dense":
        return ar.shift_by_exponent(_dense_sum(w, spikes.reshape(batch, -1)), layer.weight_exp)
    x = torch.from_numpy(spikes).to(w.dtype)
    c = layer.conv
    total = torch.nn.functional.conv2d(x, w, stride=c["stride"], padding=c["padding"], dilation=c["dilation"],
                                       groups=c["groups"]).numpy().astype(np.int64)
    return ar.wrap24(total)


class _DelayLine:
    """Lava's ``PyDelayDenseModelBitAcc``: a buffer (B, N, D + 1) of future
    inputs. Each step it sends slot 0, shifts the slots down by one and adds
    the new spikes' sums, each delay's sum shifted by the weight exponent on
    its own: delay d delivers step n's spikes at step n + 1 + d."""

    def __init__(self, weight: np.ndarray, delays: np.ndarray, weight_exp: int, batch: int) -> None:
        self.slots = np.unique(delays)
        self.weight_exp = weight_exp
        self.n = weight.shape[0]
        stack = np.stack([np.where(delays == d, weight, 0) for d in self.slots])     # (K, N, in)
        self.weight = exact_float(stack.reshape(-1, weight.shape[1]))
        self.buffer = np.zeros((batch, self.n, int(self.slots.max()) + 1), np.int64)

    def send(self) -> np.ndarray:
        return self.buffer[:, :, 0].copy()

    def receive(self, spikes: np.ndarray) -> None:
        batch = spikes.shape[0]
        sums = _dense_sum(self.weight, spikes.reshape(batch, -1)).reshape(batch, len(self.slots), self.n)
        self.buffer[:, :, :-1] = self.buffer[:, :, 1:]
        self.buffer[:, :, -1] = 0
        self.buffer[:, :, self.slots] += ar.shift_by_exponent(sums, self.weight_exp).transpose(0, 2, 1)


def simulate(layers: list[LoihiLayer], names: list[str], *, input_bias: np.ndarray | None,
             input_spikes: np.ndarray | None, timesteps: int, emulate_overflow: bool = False,
             raw: bool = False, membranes: dict | None = None, schedule: bool = True,
             currents: bool = False) -> dict[str, np.ndarray]:
    """Run a batch. ``input_bias`` (B, *shape0): the first layer's per-sample
    integer bias mantissa (direct encoding); ``input_spikes`` (B, T, ...):
    spikes into the first synapse. Returns each layer's spikes (B, T, ...)
    as uint8, aligned (or, with ``raw``, all T + depth steps as Lava records
    them). With ``membranes`` (a dict), each layer's integer v after every
    step goes into it as ``<layer>.v`` (and, with ``currents``, u as
    ``<layer>.u``), aligned like the spikes.

    ``schedule=False`` runs a netx file as lava-dl's ``netx.hdf5.Network``
    does: exactly ``timesteps`` steps, every bias on from step 1, and
    returns those raw steps (``raw`` is implied).

    Per step n (1-based) and layer: the neuron takes the synaptic input
    computed at step n - 1 (from the layer below's step n - 1 spikes, or
    input frame n - 1; from its own step n - 1 spikes through a recurrent
    synapse; or, through delays, from earlier steps), then its synapses take
    its step-n spikes."""
    batch = (input_bias if input_bias is not None else input_spikes).shape[0]
    steps = run_steps(timesteps, max(layer.depth for layer in layers)) if schedule else timesteps
    raw = raw or not schedule
    state = [(np.zeros((batch, *layer.shape), np.int64), np.zeros((batch, *layer.shape), np.int64))
             for layer in layers]
    buffers = [np.zeros((batch, *layer.shape), np.int64) for layer in layers]
    lines = [None if layer.delays is None else _DelayLine(layer.weight, layer.delays, layer.weight_exp, batch)
             for layer in layers]
    rec_lines = [None if layer.delays_rec is None else
                 _DelayLine(layer.weight_rec, layer.delays_rec, layer.weight_exp_rec, batch) for layer in layers]
    rec_buffers = [np.zeros((batch, *layer.shape), np.int64) if layer.weight_rec is not None else None
                   for layer in layers]
    records = [np.zeros((batch, steps, *layer.shape), np.uint8) for layer in layers]
    keep = membranes is not None
    voltages = [np.zeros((batch, steps, *layer.shape), np.int64) for layer in layers] if keep else None
    amps = [np.zeros((batch, steps, *layer.shape), np.int64) for layer in layers] if keep and currents else None
    zeros_in = None if input_spikes is None else np.zeros_like(input_spikes[:, 0])
    input_effective_bias = None if input_bias is None else ar.effective_bias(input_bias, NETX_BIAS_EXP)
    for step in range(1, steps + 1):
        previous = None if input_spikes is None else \
            (input_spikes[:, step - 1] if step <= timesteps else zeros_in)
        for k, (layer, name) in enumerate(zip(layers, names)):
            if layer.kind == "input":
                a_in = 0
                bias = input_effective_bias
            elif lines[k] is not None:
                a_in = lines[k].send()
                lines[k].receive(previous)
                bias = layer.bias
            else:
                a_in = buffers[k]
                buffers[k] = _synapse(layer, previous)
                bias = layer.bias
            if rec_lines[k] is not None:
                a_in = a_in + rec_lines[k].send()
            elif rec_buffers[k] is not None:
                a_in = a_in + rec_buffers[k]
            u, v = state[k]
            if schedule and layer.stages is not None:         # the bias schedule, in stages
                bias = 0
                for after, stage_bias, shift in layer.stages:
                    if step > after:
                        bias = stage_bias
                    if step == after + 1 and shift is not None:
                        u = u + shift                         # once, before the step (lava_plan.bias_steps)
            elif schedule and step <= layer.depth:            # the bias schedule
                bias = 0
            if layer.reset_interval is not None and step % layer.reset_interval == layer.reset_offset:
                u, v = np.zeros_like(u), np.zeros_like(v)     # Lava's LIFReset, before the step's dynamics
            try:
                spikes, u, v = ar.lif_step(u, v, a_in, du=layer.du, dv=layer.dv, bias=bias, vth=layer.vth,
                                           emulate=emulate_overflow)
            except ar.Overflow as exc:
                sample, *neuron = exc.index
                raise TargetError(f"layer {name}: {exc.what} (value {exc.value}) at sample {sample}, neuron "
                                  f"{tuple(neuron)}, step {step}; Loihi would wrap or clip it (pass "
                                  f"--emulate-overflow to do the same)") from None
            state[k] = (u, v)
            records[k][:, step - 1] = spikes
            if voltages is not None:
                voltages[k][:, step - 1] = v
            if amps is not None:
                amps[k][:, step - 1] = np.broadcast_to(u, v.shape)
            previous = spikes.astype(np.uint8)
            if rec_lines[k] is not None:
                rec_lines[k].receive(previous)
            elif rec_buffers[k] is not None:
                rec_buffers[k] = ar.shift_by_exponent(_dense_sum(layer.torch_weight_rec, previous),
                                                      layer.weight_exp_rec)
    if voltages is not None:
        for i, (name, layer) in enumerate(zip(names, layers)):
            for suffix, data in (("v", voltages), ("u", amps)):
                if data is not None:
                    membranes[f"{name}.{suffix}"] = data[i] if raw else align(data[i], layer.depth, timesteps,
                                                                               axis=1)
    if raw:
        return dict(zip(names, records))
    return {name: align(rec, layer.depth, timesteps, axis=1) for name, layer, rec in zip(names, layers, records)}


@dataclass(frozen=True)
class LoihiOptions(TargetOptions):
    emulate_overflow: bool = False     # wrap and clip as the chip does, instead of stopping with an error


class LoihiProgram(Program):
    """An integer network (an exported folder's, or a NIR graph quantised in
    memory), run a batch at a time."""

    arithmetic = Arithmetic.FIXED

    def __init__(self, target: str, networks: IntegerNetworks, emulate_overflow: bool) -> None:
        self.target, self.networks, self.graph = target, networks, networks.graph
        self.emulate_overflow = emulate_overflow
        self._layers = chain_layers(self.graph)
        self._loaded: dict[int, tuple[NetxNetwork, list[LoihiLayer], list[str]]] = {}   # by network

    @property
    def layers(self) -> tuple[str, ...]:
        return self._layers

    def prepare(self, *, direct: bool, dt: float | None, timesteps: int | None = None) -> None:
        """Plan, quantise and load the integer network, as the first run does."""
        self.integer_layers(direct, dt)

    def integer_layers(self, direct: bool, dt: float | None) -> tuple[NetxNetwork, list[LoihiLayer], list[str]]:
        """The integer network for this input mode and dt, as the batched
        simulator takes it: (network, its layers, their names). Read once per
        network, not once per batch (the paper preset's file takes seconds)."""
        network = self.networks.get(direct, dt)
        if id(network) in self._loaded:
            return self._loaded[id(network)]
        layers, _ = load_netx(network.open(), network.description)
        names = [layer.name for layer in network.plan.layers]
        if len(layers) != len(names):
            raise TargetError(f"{network.description}: {len(layers)} layers, but the graph has {len(names)}")
        for layer, name in zip(layers, names):
            if layer.kind != "input":      # the file's effective bias is mantissa << 6, exactly
                file_bias = layer.bias >> NETX_BIAS_EXP
                layer.stages = [(after, ar.effective_bias(bias, NETX_BIAS_EXP), shift)
                                for after, bias, shift in network.bias_stages(name, file_bias)]
            if layer.kind == "conv" and layer.conv["groups"] > MAX_LAVA_GROUPS:
                raise TargetError(f"layer {name}: {layer.conv['groups']} groups; Lava and Loihi hold at most "
                                  f"{MAX_LAVA_GROUPS}")
        self._loaded[id(network)] = network, layers, names
        return network, layers, names

    def run(self, inputs, *, dt=None, record="spikes", record_states=False, batch_size=None,
            progress=False) -> Recording:
        flat = flatten_graph(self.graph)
        x = next(iter(prepare_inputs(flat, inputs).values()))
        direct = input_mode(x, self.target)
        network, layers, names = self.integer_layers(direct, dt)
        plan = network.plan
        check_record(record, plan, self.target)
        timesteps = x.shape[1]
        step = batch_size or 64
        readouts = [layer.name for layer in plan.layers if not layer.spiking]   # their output is v
        parts, states = [], []
        for start in progress_bar(range(0, len(x), step), desc=self.target, unit="batch", disable=not progress,
                          leave=False):
            chunk = x[start:start + step]
            volts = {} if record_states or readouts else None
            bias = network.input_bias(chunk[:, 0]) if direct else None
            spikes_in = None if direct else chunk.astype(np.uint8)
            parts.append(simulate(layers, names, input_bias=bias, input_spikes=spikes_in, timesteps=timesteps,
                                  emulate_overflow=self.emulate_overflow, membranes=volts))
            states.append(volts)
        outputs = {name: np.concatenate([p[name] for p in parts]) for name in names}
        # integer v is in units of the layer's weights << 6: back to the float model's units
        volts = {name: np.concatenate([s[f"{name}.v"] for s in states]) / (network.scales[name] *
                                                                           (1 << ar.VTH_SHIFT))
                 for name in (names if record_states else readouts)}
        recorded_states = {f"{name}.v": v for name, v in volts.items()} if record_states else {}
        for name in readouts:
            outputs[name] = volts[name]
        for out in flat.outputs:
            outputs[out] = outputs[names[-1]]
        return Recording(outputs=outputs, spiking=tuple(n for n in names if n not in readouts),
                         output_nodes=tuple(flat.outputs), dt=plan.dt, states=recorded_states)


class LoihiTarget(FixedPointTarget):
    """Batched bit-accurate Loihi fixed point on an exported Lava folder (or
    a NIR graph, quantised in memory exactly as ``export --target lava``)."""

    name = "loihi"
    Options = LoihiOptions

    def open(self, source) -> LoihiProgram:
        return LoihiProgram(self.name, self.networks(source), self.options.emulate_overflow)

    @property
    def wraps_netx_bias(self) -> bool:
        return self.options.emulate_overflow

    def run_netx(self, program, x, *, record_all=False, batch_size=None, progress=False):
        """Batched, bit-exact with lava-fixed."""
        return program.run(x, record_all=record_all, batch_size=batch_size, progress=progress)
