"""Running a netx network (``network.net``, on disk or in memory) in Lava's
fixed-point, bit-accurate models (``Loihi2SimCfg(select_tag="fixed_pt")``),
one sample per run."""
from __future__ import annotations

import numpy as np

from fer2neuro.errors import TargetError
from fer2neuro.lava_compat import require_lava
from fer2neuro.lowering.netx_file import NetxNetwork
from fer2neuro.targets.lava.alignment import run_steps
from fer2neuro.targets.lava.processes import Recorders, run_and_record, spike_source, to_lava_layout


def run_netx_sample(network: NetxNetwork, x: np.ndarray) -> dict[str, np.ndarray]:
    """One sample x (T, *input_shape) through the netx network in fixed
    point; returns each layer's aligned spikes (T, *shape) as uint8."""
    require_lava()
    from lava.lib.dl import netx

    plan = network.plan
    net = netx.hdf5.Network(net_config=network.open())
    if len(net.layers) != len(plan.layers):
        raise TargetError(f"{network.description}: {len(net.layers)} layers, but its graph describes "
                          f"{len(plan.layers)}")
    timesteps = x.shape[0]
    steps = run_steps(timesteps, plan.max_depth)
    recorders = Recorders(steps)
    biases = {}
    for layer, block in zip(plan.layers, net.layers):
        neuron = block.neuron
        if layer.kind == "bias":
            value = to_lava_layout(network.input_bias(x[0]))
        else:
            value = np.broadcast_to(np.asarray(neuron.bias_mant.init), neuron.bias_mant.shape).copy()
        neuron.bias_mant.init = np.zeros(neuron.bias_mant.shape, dtype=np.int32)
        biases[layer.name] = (neuron.bias_mant, value.astype(np.int32))
        recorders.attach(layer.name, neuron.s_out)
    if not plan.direct:
        spike_source(x, steps, np.int32).s_out.connect(net.inp)
    return run_and_record(net, plan, biases, recorders, "fixed_pt", timesteps)
