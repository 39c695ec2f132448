"""The ``lava`` and ``lava-fixed`` targets behind ``simulate`` and ``verify``."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import nir
import numpy as np
from tqdm.auto import tqdm

from fer2neuro.errors import DataError, TargetError
from fer2neuro.targets.base import Recording, Target, prepare_inputs
from fer2neuro.nirgraph.flat import flatten_graph
from fer2neuro.lowering.lava_plan import LavaPlan, build_plan


def input_mode(x: np.ndarray, target: str) -> bool:
    """True for a constant (direct-encoded) input, False for spikes."""
    if np.all(x == x[:, :1]):
        return True
    if not np.isin(x, (0.0, 1.0)).all():
        raise DataError(f"the {target} target takes spike inputs (0/1) or an input held constant over "
                        f"time (direct encoding); this input is neither")
    return False


def _check_record(record, plan: LavaPlan, target: str) -> None:
    if record in ("spikes", "all"):
        return
    names = {layer.name for layer in plan.layers}
    other = sorted(set(record) - names)
    if other:
        raise DataError(f"the {target} target records the spiking layers ({', '.join(sorted(names))}); "
                        f"not {', '.join(other)}")


class _LavaBase(Target):
    """Both Lava targets: check the inputs, plan the layers, one Lava run per sample."""

    def run(self, graph, inputs, *, dt=None, record="spikes", record_states=False,
            batch_size=None, progress=False) -> Recording:
        if record_states:
            raise DataError(f"the {self.name} target does not record membranes")
        graph, context = self.open(graph)
        flat = flatten_graph(graph)
        x = next(iter(prepare_inputs(flat, inputs).values()))
        direct = input_mode(x, self.name)
        plan = build_plan(graph, direct=direct, dt=1.0 if dt is None else float(dt), target=self.name)
        _check_record(record, plan, self.name)
        with context(graph, direct, plan.dt) as runner:
            runs = [runner(plan, sample) for sample in
                    tqdm(x, desc=self.name, unit="sample", disable=not progress, leave=False)]
        outputs = {layer.name: np.stack([r[layer.name] for r in runs]) for layer in plan.layers}
        output_nodes = tuple(flat.outputs)
        for out in output_nodes:
            outputs[out] = outputs[plan.layers[-1].name]
        return Recording(outputs=outputs, spiking=tuple(layer.name for layer in plan.layers),
                         output_nodes=output_nodes, dt=plan.dt)

    def open(self, graph):
        """(NIR graph, context manager factory yielding a per-sample runner)."""
        raise NotImplementedError


class LavaTarget(_LavaBase):
    """Float Lava: lava-nc LIF/Dense/Conv processes in ``floating_pt``."""

    name = "lava"
    precision = "float64"

    def open(self, graph):
        from fer2neuro.targets.lava.processes import run_float_sample

        if isinstance(graph, (str, Path)):          # an exported Lava folder: its float graph
            from fer2neuro.exporters.lava_export import LavaArtifact

            graph = LavaArtifact.load(graph).graph

        @contextmanager
        def context(_graph, _direct, _dt):
            yield run_float_sample

        return graph, context


class LavaFixedTarget(_LavaBase):
    """Fixed-point Lava: the quantised netx network in ``fixed_pt``
    (bit-accurate Loihi models). ``graph`` is an exported Lava folder, or a
    NIR graph, quantised on the fly as ``export --target lava`` would."""

    name = "lava-fixed"
    precision = "fixed"

    def open(self, graph):
        from fer2neuro.exporters.lava_export import LavaArtifact, quantised_artifact
        from fer2neuro.targets.lava.netx_run import run_netx_sample

        if isinstance(graph, (str, Path)):
            artifact = LavaArtifact.load(graph)

            @contextmanager
            def exported(_graph, _direct, _dt):
                yield lambda plan, x: run_netx_sample(artifact, plan, x)

            return artifact.graph, exported
        if not isinstance(graph, nir.NIRGraph):
            raise TargetError(f"the {self.name} target runs a NIR graph or an exported Lava folder")

        @contextmanager
        def quantised(nir_graph, direct, dt):
            with quantised_artifact(nir_graph, direct=direct, dt=dt) as artifact:
                yield lambda plan, x: run_netx_sample(artifact, plan, x)

        return graph, quantised
