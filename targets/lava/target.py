"""The ``lava`` and ``lava-fixed`` targets behind ``simulate`` and ``verify``,
and the integer networks the fixed-point targets (lava-fixed, loihi) run."""
from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
from fer2neuro.progress import progress_bar

from fer2neuro.errors import DataError, TargetError
from fer2neuro.lowering.lava_folder import LavaArtifact, is_lava_folder
from fer2neuro.lowering.lava_plan import LavaPlan, build_plan
from fer2neuro.lowering.netx_file import NetxNetwork
from fer2neuro.lowering.quantise import quantise
from fer2neuro.nirgraph.describe import forward_order
from fer2neuro.nirgraph.flat import flatten_graph
from fer2neuro.nirgraph.equations import SPIKING_TYPES
from fer2neuro.targets.base import Arithmetic, Program, Recording, Target, prepare_inputs


def input_mode(x: np.ndarray, target: str) -> bool:
    """True for a constant (direct-encoded) input, False for spikes."""
    if np.all(x == x[:, :1]):
        return True
    if not np.isin(x, (0.0, 1.0)).all():
        raise DataError(f"the {target} target takes spike inputs (0/1) or an input held constant over "
                        f"time (direct encoding); this input is neither")
    return False


def check_record(record, plan: LavaPlan, target: str) -> None:
    if record in ("spikes", "all"):
        return
    names = {layer.name for layer in plan.layers}
    other = sorted(set(record) - names)
    if other:
        raise DataError(f"the {target} target records the spiking layers ({', '.join(sorted(names))}); "
                        f"not {', '.join(other)}")


def chain_layers(graph: nir.NIRGraph) -> tuple[str, ...]:
    """The spiking layers a Lava-style target records: the chain's neurons,
    in data-flow order (whether Lava can run them is checked when planned)."""
    flat = flatten_graph(graph)
    order, _ = forward_order(flat)
    return tuple(n for n in order if isinstance(flat.nodes[n], SPIKING_TYPES))


class IntegerNetworks:
    """What a fixed-point target runs: an exported folder's netx network as it
    is, or a NIR graph quantised in memory (quantise.py) once per input mode
    and dt, exactly as ``export --target lava`` would quantise it."""

    def __init__(self, source, target: str) -> None:
        self.target = target
        self.artifact = LavaArtifact.load(source) if isinstance(source, (str, Path)) else None
        self.graph = self.artifact.graph if self.artifact else source
        self._networks: dict[tuple[bool, float], NetxNetwork] = {}

    def get(self, direct: bool, dt: float | None) -> NetxNetwork:
        if self.artifact is not None:
            self.artifact.check_input_mode(direct)
            if dt is not None and dt != self.artifact.dt:
                raise TargetError(f"{self.artifact.folder} was quantised at dt={self.artifact.dt:g}, not "
                                  f"dt={dt:g}: export it again at that dt, or run its model.nir")
            key = (direct, self.artifact.dt)
            if key not in self._networks:
                self._networks[key] = self.artifact.network(self.target).check_readable()
        else:
            key = (direct, 1.0 if dt is None else float(dt))
            if key not in self._networks:
                network = quantise(self.graph, direct=direct, dt=key[1], target=self.target)
                self._networks[key] = NetxNetwork.in_memory(network)
        return self._networks[key]


class LavaProgram(Program):
    """Both Lava targets: check the inputs, plan the layers, one Lava run per
    sample; ``sample_runner(direct, dt)`` gives the per-sample runner."""

    records_membranes = False

    def __init__(self, target: str, arithmetic: Arithmetic, graph: nir.NIRGraph, sample_runner) -> None:
        self.target, self.arithmetic, self.graph = target, arithmetic, graph
        self._sample_runner = sample_runner
        self._layers = chain_layers(graph)

    @property
    def layers(self) -> tuple[str, ...]:
        return self._layers

    def prepare(self, *, direct: bool, dt: float | None, timesteps: int | None = None) -> None:
        """Plan the layers (lava), or plan, quantise and write the netx
        network (lava-fixed), as a run does before its first sample."""
        self._sample_runner(direct, dt)

    def run(self, inputs, *, dt=None, record="spikes", record_states=False, batch_size=None,
            progress=False) -> Recording:
        if record_states:
            raise DataError(f"the {self.target} target does not record membranes")
        flat = flatten_graph(self.graph)
        x = next(iter(prepare_inputs(flat, inputs).values()))
        direct = input_mode(x, self.target)
        plan, runner = self._sample_runner(direct, dt)
        check_record(record, plan, self.target)
        runs = [runner(sample) for sample in
                progress_bar(x, desc=self.target, unit="sample", disable=not progress, leave=False)]
        outputs = {layer.name: np.stack([r[layer.name] for r in runs]) for layer in plan.layers}
        output_nodes = tuple(flat.outputs)
        for out in output_nodes:
            outputs[out] = outputs[plan.layers[-1].name]
        return Recording(outputs=outputs, spiking=tuple(layer.name for layer in plan.layers if layer.spiking),
                         output_nodes=output_nodes, dt=plan.dt)


class LavaTarget(Target):
    """Float Lava: lava-nc LIF/Dense/Conv processes in ``floating_pt``."""

    name = "lava"
    arithmetic = Arithmetic.FLOAT64
    artifact = "an exported Lava folder (its model.nir)"

    def accepts(self, path) -> bool:
        return is_lava_folder(path)

    def open(self, source) -> LavaProgram:
        from fer2neuro.targets.lava.processes import run_float_sample

        if isinstance(source, (str, Path)):          # an exported Lava folder: its float graph
            source = LavaArtifact.load(source).graph
        self._check_source(source)

        def sample_runner(direct, dt):
            plan = build_plan(source, direct=direct, dt=1.0 if dt is None else float(dt), target=self.name)
            return plan, lambda x: run_float_sample(plan, x)

        return LavaProgram(self.name, self.arithmetic, source, sample_runner)


class FixedPointTarget(Target):
    """A target that runs Loihi's integer network: an exported Lava folder as
    it is, or a NIR graph quantised in memory (``IntegerNetworks``)."""

    arithmetic = Arithmetic.FIXED
    artifact = "an exported Lava folder"

    def accepts(self, path) -> bool:
        return is_lava_folder(path)

    def networks(self, source) -> IntegerNetworks:
        if not isinstance(source, (str, Path)):
            self._check_source(source)
        return IntegerNetworks(source, self.name)

    # A lava-dl netx file as it is (``fer2neuro simulate NET.net``): both
    # fixed-point targets run any netx network, T steps, no alignment.
    wraps_netx_bias = True         # Lava stores bias_mant as int16 and wraps what does not fit

    def open_netx(self, path, *, reset_interval: int | None = None, reset_offset: int = 0):
        """The file checked and read (``NetxProgram``)."""
        from fer2neuro.targets.loihi.netx_program import NetxProgram

        return NetxProgram(path, reset_interval=reset_interval, reset_offset=reset_offset,
                           emulate_overflow=self.wraps_netx_bias)

    def run_netx(self, program, x, *, record_all: bool = False, batch_size: int | None = None,
                 progress: bool = False) -> dict[str, np.ndarray]:
        """Per netx layer index: spikes (and with ``record_all`` u and v)."""
        raise NotImplementedError


class LavaFixedTarget(FixedPointTarget):
    """Fixed-point Lava: the quantised netx network in ``fixed_pt``
    (bit-accurate Loihi models)."""

    name = "lava-fixed"

    def open(self, source) -> LavaProgram:
        from fer2neuro.targets.lava.netx_run import run_netx_sample

        networks = self.networks(source)

        def sample_runner(direct, dt):
            network = networks.get(direct, dt)
            return network.plan, lambda x: run_netx_sample(network, x)

        return LavaProgram(self.name, self.arithmetic, networks.graph, sample_runner)

    def run_netx(self, program, x, *, record_all=False, batch_size=None, progress=False):
        """lava-dl's own ``netx.hdf5.Network`` in Lava fixed_pt, one sample per run."""
        from fer2neuro.targets.lava.netx_run import run_netx_file

        return run_netx_file(program, x, record_all=record_all, progress=progress)
