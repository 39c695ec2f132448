"""Lava process models for running arbitrary lava-dl netx networks.

``RecurrentDense`` (netx's ``dense_rec`` block) has no ProcessModel in
lava-dl 0.6, and needs none: a netx block is a hierarchical process whose
ports only forward to its synapses and neuron, and Lava's compiler builds
the leaf processes it reaches through ports from the ``Network`` it runs
(a ``Dense`` input synapse, a ``Dense`` recurrent synapse from the neuron's
``s_out`` back to its ``a_in``, and the LIF). Running the block on its own
would fail; inside a ``Network`` it runs as is.

What this module adds is recording: Lava's LIF models
(``PyLifModelBitAcc``, ``PyLifResetModelBitAcc``, and ``PyLifModelFloat``
for the float target's readouts) subclassed only to write
each step's spikes (and, when asked, u and v) into memory-mapped .npy files
the parent process created. Lava's own code computes every value; reading
them back through a Monitor moves arrays element by element through the
runtime's channels (see recorder.py). The files and the step count come in
the neuron's ``proc_params`` under ``RECORD_KEY``; each neuron instance is
mapped to its model through ``run_config``'s ``exception_proc_model_map``.
"""
from __future__ import annotations

import numpy as np
from lava.proc.lif.models import PyLifModelBitAcc, PyLifModelFloat, PyLifResetModelBitAcc
from lava.proc.lif.process import LIF, LIFReset

RECORD_KEY = "fer2neuro_record"


def create_state_files(paths: dict[str, str], shape: tuple, steps: int, dtype=np.int32) -> None:
    """(steps, *shape) files: "s" uint8, "u" and "v" ``dtype`` (Lava's u, v:
    int32 in fixed_pt, float64 in floating_pt)."""
    for key, path in paths.items():
        np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8 if key == "s" else dtype,
                                  shape=(steps, *shape)).flush()


class _Recording:
    """Mixin: Lava's run_spk unchanged, then this step's s (and u, v) saved."""

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        spec = proc_params[RECORD_KEY]
        self._steps = int(spec["steps"])
        self._files = {key: np.lib.format.open_memmap(path, mode="r+") for key, path in spec["paths"].items()}
        self._spiked = None

    def spiking_activation(self):
        self._spiked = super().spiking_activation()
        return self._spiked

    def run_spk(self) -> None:
        super().run_spk()
        t = self.time_step - 1
        if t < self._steps:
            self._files["s"][t] = self._spiked
            if "u" in self._files:
                self._files["u"][t] = self.u
                self._files["v"][t] = self.v
        if t == self._steps - 1:
            for f in self._files.values():
                f.flush()


class PyLifRecordingModel(_Recording, PyLifModelBitAcc):
    pass


class PyLifResetRecordingModel(_Recording, PyLifResetModelBitAcc):
    pass


class PyLifFloatRecordingModel(_Recording, PyLifModelFloat):
    """The float LIF, recording (the lava target's non-spiking readouts)."""


def recording_model(neuron, tag: str = "fixed_pt"):
    """The recording model for a neuron (LIF or LIFReset; a float LIF with
    ``tag="floating_pt"``)."""
    if tag == "floating_pt" and type(neuron) is LIF:
        return PyLifFloatRecordingModel
    if type(neuron) is LIFReset:
        return PyLifResetRecordingModel
    if type(neuron) is LIF:
        return PyLifRecordingModel
    raise TypeError(f"no recording model for {type(neuron).__name__}")
