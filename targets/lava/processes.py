"""Building and running the Lava process network of a plan, one sample per
run (Lava simulates one network instance at a time).

Layouts: NIR tensors are (C, H, W); Lava's are (X, Y, C) = (W, H, C), and
its Conv computes a true convolution, so kernels are transposed and flipped
(torch's (out, in, kH, kW) correlation -> Lava's (out, kW, kH, in)
convolution). A dense layer after a conv layer reads the (W, H, C) output
transposed to (C, H, W) and flattened, the order of torch's Flatten.
"""
from __future__ import annotations

import contextlib
import os
import tempfile

import numpy as np

from fer2neuro.children import guard, interrupt_kills_children
from fer2neuro.lava_compat import require_lava
from fer2neuro.targets.lava.alignment import align, run_steps
from fer2neuro.lowering.lava_plan import LavaLayer, LavaPlan


def to_lava_layout(x: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (W, H, C); vectors unchanged."""
    return x.transpose(2, 1, 0) if x.ndim == 3 else x


def from_lava_layout(x: np.ndarray) -> np.ndarray:
    """(W, H, C, ...) -> (C, H, W, ...) for the first three axes."""
    return np.swapaxes(x, 0, 2) if x.ndim >= 4 else x


def lava_conv_weight(weight: np.ndarray) -> np.ndarray:
    """torch-layout correlation kernel (out, in, kH, kW) -> Lava's (out, kW, kH, in) convolution kernel."""
    return np.ascontiguousarray(weight.transpose(0, 3, 2, 1)[:, ::-1, ::-1, :])


def _xy(pair) -> tuple[int, int]:
    """(H, W)-ordered pair -> Lava's (X, Y) = (W, H)."""
    return int(pair[1]), int(pair[0])


def layer_processes(layer: LavaLayer, input_shape_lava: tuple | None, bias: np.ndarray):
    """(synapse or None, LIF) for one float layer."""
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.lif.process import LIF

    shape = tuple(reversed(layer.shape)) if len(layer.shape) == 3 else layer.shape
    lif = LIF(shape=shape, du=layer.du, dv=layer.dv, vth=layer.vth,
              bias_mant=to_lava_layout(np.broadcast_to(bias, layer.shape).astype(np.float64)),
              name=layer.name)
    if layer.kind == "bias":
        return None, lif
    if layer.kind == "conv":
        synapse = Conv(weight=lava_conv_weight(layer.weight), input_shape=input_shape_lava,
                       stride=_xy(layer.conv["stride"]), padding=_xy(layer.conv["padding"]),
                       dilation=_xy(layer.conv["dilation"]), groups=layer.conv["groups"],
                       name=f"{layer.synapse}")
        if tuple(synapse.a_out.shape) != shape:
            raise ValueError(f"{layer.name}: Lava conv output {synapse.a_out.shape} != neuron {shape}")
    else:
        synapse = Dense(weights=np.ascontiguousarray(layer.weight), name=f"{layer.synapse}")
    synapse.a_out.connect(lif.a_in)
    return synapse, lif


def recurrent_process(layer: LavaLayer, lif):
    """The layer's recurrent Dense (its spikes back into its own input,
    one step later like every Lava synapse), or None."""
    if layer.recurrent is None:
        return None
    from lava.proc.dense.process import Dense

    recurrent = Dense(weights=np.ascontiguousarray(layer.recurrent), name=f"{layer.recurrent_synapse}")
    lif.s_out.connect(recurrent.s_in)
    recurrent.a_out.connect(lif.a_in)
    return recurrent


def run_config(tag: str, recorders: "Recorders | None" = None, models: dict | None = None):
    """``Loihi2SimCfg`` for ``floating_pt`` or ``fixed_pt``. The recorders'
    model is named per instance (the compiler looks instances up), else Lava
    executes every module next to recorder.py looking for one. ``models``:
    more {process instance: ProcessModel} exceptions (netx_blocks.py's
    recording neuron models)."""
    from lava.magma.core.run_configs import Loihi2SimCfg

    from fer2neuro.targets.lava.recorder import PySpikeRecorderFixed, PySpikeRecorderFloat, SpikeRecorder

    model = PySpikeRecorderFloat if tag == "floating_pt" else PySpikeRecorderFixed
    processes = recorders.processes if recorders is not None else ()
    watched = recorders.models if recorders is not None else {}
    exceptions = {SpikeRecorder: model, **{r: model for r in processes}, **watched, **(models or {})}
    return Loihi2SimCfg(select_tag=tag, exception_proc_model_map=exceptions)


def bias_schedule(plan: LavaPlan) -> list[tuple[int, list[tuple[str, int]]]]:
    """When to write each layer's bias: (steps to run first, [(layer, stage)]).

    A bias is added at every step, but a layer's first input arrives only
    after ``depth`` steps of synaptic delay; a bias on from step 1 would act
    ``depth`` extra times. Each layer's bias is therefore written (one Var
    write) just before its first input arrives, and a recurrent synapse's
    bias one step later (``LavaLayer.bias_steps``: stage 0, then stage 1),
    which keeps the run exact.
    """
    by_step: dict[int, list[tuple[str, int]]] = {}
    for layer in plan.layers:
        for stage, (step, *_) in enumerate(layer.bias_steps()):
            by_step.setdefault(step, []).append((layer.name, stage))
    schedule, done = [], 0
    for step in sorted(by_step):
        schedule.append((step - done, by_step[step]))
        done = step
    return schedule


def run_scheduled(anchor, schedule, biases: dict, steps: int, run_cfg) -> None:
    """Run ``steps`` steps, writing each layer's bias when its schedule says.
    ``biases[layer] = (Var, values)``: one value per stage (a list), or one
    array for a layer with a single stage; or ``(Var, values, u Var, u
    shifts)`` where a stage also shifts u (``LavaLayer.bias_steps``)."""
    from lava.magma.core.run_conditions import RunSteps

    done = 0
    for wait, writes in schedule:
        if wait:
            anchor.run(condition=RunSteps(num_steps=wait), run_cfg=run_cfg)
            done += wait
        for name, stage in writes:
            var, values, *u_part = biases[name]
            values = values if isinstance(values, list) else [values]
            if stage >= len(values):
                continue
            _write(var, values[stage], done)
            if u_part and u_part[1][stage] is not None:
                u_var, shifts = u_part
                _write(u_var, (u_var.init if done == 0 else u_var.get()) + shifts[stage], done)
    if steps > done:
        anchor.run(condition=RunSteps(num_steps=steps - done), run_cfg=run_cfg)


def _write(var, value, done: int) -> None:
    """A Var's initial value before the first run, else a write."""
    if done == 0:
        var.init = value
    else:
        var.set(value)


def spike_source(x: np.ndarray, steps: int, dtype):
    """A RingBuffer sending the input spikes x (T, *input_shape) for T steps,
    then zeros for the rest of the run (a RingBuffer repeats its data)."""
    from lava.proc.io.source import RingBuffer as Source

    data = np.zeros((*to_lava_layout(x[0]).shape, steps), dtype=dtype)
    data[..., :x.shape[0]] = np.stack([to_lava_layout(f) for f in x], axis=-1)
    return Source(data=data)


def prepare_lava() -> None:
    """Before building a network to run: Lava importable, and the workers
    it will fork guarded (they die with us; their temporary files, made
    from now on, go to our private TMPDIR: fer2neuro.children)."""
    require_lava()
    guard()


@contextlib.contextmanager
def stopping(anchor):
    """Stop the Lava network ``anchor`` belongs to when the block ends.

    After a run, or an error raised in it, Lava's own stop. After an
    interrupt (KeyboardInterrupt, SystemExit, or an error the interrupt's
    killed workers caused) Lava's stop would wait for ever on workers
    stopped mid-step: ``interrupt_kills_children`` kills them, and the
    runtime's stop becomes a no-op, so that no ``__del__`` (the runtime's,
    every process's) tries it."""
    def abandon():
        runtime = getattr(anchor, "runtime", None)
        if runtime is not None:
            runtime.stop = lambda: None

    with interrupt_kills_children(on_interrupt=abandon) as interrupt:
        try:
            yield
        except Exception:
            if not interrupt["interrupted"]:
                anchor.stop()
            raise
        if not interrupt["interrupted"]:
            anchor.stop()


def run_float_sample(plan: LavaPlan, x: np.ndarray) -> dict[str, np.ndarray]:
    """One sample x (T, *input_shape) through the float network in Lava
    (``Loihi2SimCfg(select_tag="floating_pt")``); returns each layer's
    aligned spikes (T, *shape) as uint8 (a readout layer's v as float64)."""
    prepare_lava()

    timesteps = x.shape[0]
    steps = run_steps(timesteps, plan.max_depth)
    processes, biases, prev, prev_shape = [], {}, None, None
    recorders = Recorders(steps)
    if not plan.direct:
        prev, prev_shape = spike_source(x, steps, np.float64).s_out, tuple(reversed(plan.input_shape))
    for layer in plan.layers:
        synapse, lif = layer_processes(layer, prev_shape, np.zeros(layer.shape))
        stages = [(0, plan.input_bias(x[0]), None)] if layer.kind == "bias" else layer.bias_steps()
        biases[layer.name] = (lif.bias_mant, [_lava_value(layer, bias) for _, bias, _ in stages],
                              lif.u, [None if shift is None else _lava_value(layer, shift) for *_, shift in stages])
        if synapse is not None:
            port = prev.transpose([2, 1, 0]).flatten() if layer.flatten_input else prev
            port.connect(synapse.s_in)
        if layer.spiking:
            recorders.attach(layer.name, lif.s_out)
        else:
            recorders.watch_membrane(layer.name, lif, "floating_pt")
        processes += [p for p in (synapse, lif, recurrent_process(layer, lif)) if p is not None]
        prev, prev_shape = lif.s_out, lif.s_out.shape
    return run_and_record(processes[-1], plan, biases, recorders, "floating_pt", timesteps)


def _lava_value(layer: LavaLayer, value) -> np.ndarray:
    return to_lava_layout(np.broadcast_to(value, layer.shape).astype(np.float64))


def run_and_record(anchor, plan: LavaPlan, biases: dict, recorders: "Recorders", tag: str,
                   timesteps: int) -> dict[str, np.ndarray]:
    """Run the network that ``anchor`` belongs to for T + depth steps with
    the bias schedule, stop it, and return each layer's aligned spikes."""
    steps = run_steps(timesteps, plan.max_depth)
    with recorders:
        with stopping(anchor):
            run_scheduled(anchor, bias_schedule(plan), biases, steps, run_config(tag, recorders))
        return aligned_spikes(plan, recorders.read(), timesteps)


class Recorders:
    """One SpikeRecorder per layer, writing into a temporary folder."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.paths: dict[str, str] = {}
        self.processes: list = []
        self.membranes: dict[str, str] = {}   # readout layers: their v file
        self.models: dict = {}                # neuron instance -> recording ProcessModel
        self._tmp = tempfile.TemporaryDirectory(prefix="fer2neuro-lava-spikes-")

    def attach(self, name: str, port) -> None:
        from fer2neuro.targets.lava.recorder import SpikeRecorder, create_recording

        path = os.path.join(self._tmp.name, f"{len(self.paths)}.npy")
        create_recording(path, tuple(port.shape), self.steps)
        recorder = SpikeRecorder(shape=tuple(port.shape), path=path)
        port.connect(recorder.a_in)
        self.paths[name] = path
        self.processes.append(recorder)

    def watch_membrane(self, name: str, neuron, tag: str) -> None:
        """Record a neuron's v at every step (a non-spiking readout): its
        process model becomes the recording one (netx_blocks.py)."""
        from fer2neuro.targets.lava.netx_blocks import RECORD_KEY, create_state_files, recording_model

        paths = {key: os.path.join(self._tmp.name, f"v{len(self.membranes)}.{key}.npy") for key in ("s", "u", "v")}
        create_state_files(paths, tuple(neuron.s_out.shape), self.steps,
                           np.float64 if tag == "floating_pt" else np.int32)
        neuron.proc_params[RECORD_KEY] = {"paths": paths, "steps": self.steps}
        self.models[neuron] = recording_model(neuron, tag)
        self.membranes[name] = paths["v"]

    def read(self) -> dict[str, np.ndarray]:
        """Spike sinks (*lava_shape, steps) and membranes (steps, *lava_shape)."""
        spikes = {name: np.load(path) for name, path in self.paths.items()}
        return {**spikes, **{name: np.load(path) for name, path in self.membranes.items()}}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()


def aligned_spikes(plan: LavaPlan, recorded: dict, timesteps: int) -> dict[str, np.ndarray]:
    """Sink recordings (*lava_shape, steps) -> each layer's (T, *shape) uint8,
    delay removed; a readout layer's v (T, *shape) as recorded."""
    out = {}
    for layer in plan.layers:
        if not layer.spiking:        # a readout's v, (steps, *lava_shape), as Lava computed it
            data = np.asarray(recorded[layer.name])
            out[layer.name] = align(data.transpose(0, *reversed(range(1, data.ndim))), layer.depth, timesteps)
            continue
        data = np.moveaxis(from_lava_layout(np.asarray(recorded[layer.name])), -1, 0)   # (steps, *shape)
        out[layer.name] = align(data, layer.depth, timesteps).astype(np.uint8)
    return out
