"""Running a netx network (``network.net``, on disk or in memory) in Lava's
fixed-point, bit-accurate models (``Loihi2SimCfg(select_tag="fixed_pt")``),
one sample per run."""
from __future__ import annotations

import numpy as np

from fer2neuro.errors import TargetError
from fer2neuro.lowering.netx_file import EXTRA_WEIGHT_EXP, NetxNetwork, open_netx
from fer2neuro.lowering.quantise import STATE_SHIFT
from fer2neuro.targets.lava.alignment import run_steps
from fer2neuro.targets.lava.processes import (Recorders, prepare_lava, run_and_record, spike_source, stopping,
                                              to_lava_layout)


def add_weight_exponents(net, file, name: str = "netx network") -> None:
    """fer2neuro's extra dense weight exponents (netx_file.EXTRA_WEIGHT_EXP),
    which netx does not read, added to each Dense synapse's ``weight_exp``
    (Lava's bit-accurate Dense reads it from its proc_params at run time).
    The file is read through ``open_netx``, which checks every value."""
    with open_netx(file, name) as f:
        groups = f["layer"]
        extra = [int(groups[str(i)][EXTRA_WEIGHT_EXP][()]) if EXTRA_WEIGHT_EXP in groups[str(i)] else 0
                 for i in range(len(groups)) if "neuron" in groups[str(i)]]
    for block, exponent in zip(net.layers, extra):
        for synapse in (getattr(block, "synapse", None), getattr(block, "synapse_rec", None)):
            if exponent and synapse is not None:
                synapse.proc_params.overwrite("weight_exp", synapse.proc_params.get("weight_exp", 0) + exponent)


def run_netx_sample(network: NetxNetwork, x: np.ndarray) -> dict[str, np.ndarray]:
    """One sample x (T, *input_shape) through the netx network in fixed
    point; returns each layer's aligned spikes (T, *shape) as uint8."""
    prepare_lava()
    from lava.lib.dl import netx

    plan = network.plan
    net = netx.hdf5.Network(net_config=network.open())
    if len(net.layers) != len(plan.layers):
        raise TargetError(f"{network.description}: {len(net.layers)} layers, but its graph describes "
                          f"{len(plan.layers)}")
    add_weight_exponents(net, network.open(), network.description)
    timesteps = x.shape[0]
    steps = run_steps(timesteps, plan.max_depth)
    recorders = Recorders(steps)
    biases = {}
    for layer, block in zip(plan.layers, net.layers):
        neuron = block.neuron
        file_bias = np.broadcast_to(np.asarray(neuron.bias_mant.init), neuron.bias_mant.shape).astype(np.int64)
        neuron.bias_mant.init = np.zeros(neuron.bias_mant.shape, dtype=np.int32)
        if layer.kind == "bias":
            biases[layer.name] = (neuron.bias_mant, to_lava_layout(network.input_bias(x[0])).astype(np.int32))
        else:                                   # the staged schedule (a recurrent bias, a shift of u)
            # to_lava_layout is its own inverse: (W, H, C) -> (C, H, W)
            stages = network.bias_stages(layer.name, to_lava_layout(file_bias))
            biases[layer.name] = (neuron.bias_mant, [to_lava_layout(b).astype(np.int32) for _, b, _ in stages],
                                  neuron.u, [None if shift is None else to_lava_layout(shift).astype(np.int32)
                                             for *_, shift in stages])
        if layer.spiking:
            recorders.attach(layer.name, neuron.s_out)
        else:
            recorders.watch_membrane(layer.name, neuron, "fixed_pt")
    if not plan.direct:
        spike_source(x, steps, np.int32).s_out.connect(net.inp)
    out = run_and_record(net, plan, biases, recorders, "fixed_pt", timesteps)
    for layer in plan.layers:
        if not layer.spiking:        # integer v is in the weights' units << 6: back to the graph's units
            out[layer.name] = out[layer.name] / (network.scales[layer.name] * (1 << STATE_SHIFT))
    return out


def _to_lava(x: np.ndarray) -> np.ndarray:
    """NIR/file order -> Lava's (reversed) order, for any rank."""
    return x.transpose(tuple(reversed(range(x.ndim))))


def run_netx_file(program, x: np.ndarray, *, record_all: bool = False, progress: bool = False) -> dict:
    """A netx file (``program``: a loihi ``NetxProgram``, which checked it
    and names its layers) run by lava-dl's own ``netx.hdf5.Network`` in
    Lava's ``fixed_pt`` models, one sample per run, T steps, with the same
    ``reset_interval`` / ``reset_offset``. X as ``program.prepare`` takes
    it; returns what ``program.run`` returns (same keys, shapes, dtypes)."""
    prepare_lava()
    import tempfile

    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from fer2neuro.progress import progress_bar

    from fer2neuro.targets.lava.netx_blocks import RECORD_KEY, create_state_files, recording_model
    from fer2neuro.targets.lava.processes import run_config, spike_source

    x = program.prepare(x)
    batch, timesteps = x.shape[:2]
    keys = ("s", "u", "v") if record_all else ("s",)
    out = {name: np.zeros((batch, timesteps, *layer.shape), np.uint8)
           for name, layer in zip(program.names, program.layers)}
    if record_all:
        for name, layer in zip(program.names, program.layers):
            out[f"{name}.u"] = np.zeros((batch, timesteps, *layer.shape), np.int64)
            out[f"{name}.v"] = np.zeros((batch, timesteps, *layer.shape), np.int64)
    for b in progress_bar(range(batch), desc="lava-fixed", unit="sample", disable=not progress, leave=False):
        net = netx.hdf5.Network(net_config=str(program.path), reset_interval=program.reset_interval,
                                reset_offset=program.reset_offset)
        if len(net.layers) != len(program.layers):
            raise TargetError(f"{program.path}: netx built {len(net.layers)} layers, the loader "
                              f"{len(program.layers)}")
        with tempfile.TemporaryDirectory(prefix="fer2neuro-netx-") as tmp:
            models, files = {}, {}
            for i, (name, block) in enumerate(zip(program.names, net.layers)):
                neuron = block.neuron
                paths = {key: f"{tmp}/{i}.{key}.npy" for key in keys}
                create_state_files(paths, tuple(neuron.s_out.shape), timesteps)
                neuron.proc_params[RECORD_KEY] = {"paths": paths, "steps": timesteps}
                models[neuron] = recording_model(neuron)
                files[name] = paths
            if program.bias_input:
                neuron = net.layers[0].neuron
                neuron.bias_mant.init = _to_lava(x[b, 0]).astype(np.int32)
            else:
                spike_source(x[b], timesteps, np.int32).s_out.connect(net.inp)
            with stopping(net):
                net.run(condition=RunSteps(num_steps=timesteps), run_cfg=run_config("fixed_pt", models=models))
            for name, paths in files.items():
                for key, path in paths.items():
                    data = np.load(path)                                   # (T, *lava_shape)
                    data = data.transpose(0, *reversed(range(1, data.ndim)))
                    out[name if key == "s" else f"{name}.{key}"][b] = data
    return out
