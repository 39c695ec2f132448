"""Shared fixtures: untrained models whose every layer spikes, for equivalence tests.

A freshly initialised network is silent in its last layers, so a spike-exact
comparison there would prove nothing. ``active_model`` rescales each linear
layer until the LIF layer after it fires at a useful rate on a probe batch,
and gives the BatchNorms non-trivial statistics so that folding them matters.
Deterministic for a given seed.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from fer2neuro.data import FER2013_CLASSES
from fer2neuro.model.config import preset_config
from fer2neuro.model.network import ConvSNN, build_model

# Test modules import the small helper modules beside them (cli_errors.py);
# with --import-mode=importlib pytest itself does not put this folder on the path.
sys.path.insert(0, str(Path(__file__).parent))


def probe_images(n: int = 8, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 1, 48, 48), generator=g, dtype=torch.float64)


@torch.no_grad()
def active_model(preset: str = "small", seed: int = 0, min_rate: float = 0.08, **overrides) -> ConvSNN:
    torch.manual_seed(seed)
    config = preset_config(preset, class_names=tuple(FER2013_CLASSES), **overrides)
    model = build_model(config).double().eval()
    for layer in model.layers:                   # walks the architecture: any blocks=... works
        if layer.kind == "conv":
            bn = getattr(model, layer.batchnorm)
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.6, 1.4)
            bn.bias.uniform_(-0.2, 0.4)
    probe = probe_images()
    names = [layer.name for layer in model.layers]
    pairs = [(layer.name, next(later.name for later in model.layers[names.index(layer.name):]
                                if later.kind in ("if", "lif")))
             for layer in model.layers if layer.kind == "linear"]
    for fc, lif in pairs:
        for _ in range(40):
            if model.record(probe)[lif].mean() >= min_rate:
                break
            getattr(model, fc).weight.mul_(1.4)
    return model



@pytest.fixture(scope="session")
def make_active_model():
    """Factory: ``make_active_model(preset="small", seed=0, **config_overrides)``."""
    return active_model


@pytest.fixture(scope="session")
def make_probe_images():
    return probe_images


@pytest.fixture(scope="session")
def active_small_model():
    """The small preset, every layer spiking (float64)."""
    return active_model("small")


@pytest.fixture(scope="session")
def active_checkpoint(active_small_model, tmp_path_factory):
    """``active_small_model`` saved as a checkpoint (weights rounded to float32)."""
    from fer2neuro.model.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("active") / "active.pt"
    save_checkpoint(path, active_model("small").float(), active_small_model.config)
    return path


@pytest.fixture(scope="session")
def model(active_small_model):
    """Short name of ``active_small_model`` for the backend tests (a module's own
    ``model`` fixture takes precedence)."""
    return active_small_model


@pytest.fixture(scope="session")
def checkpoint(active_checkpoint):
    """Short name of ``active_checkpoint``."""
    return active_checkpoint


@pytest.fixture(scope="session")
def H():
    """tests/test_nir_recurrent.py's Braille-like graph builders and
    hand-written loops, for the other targets' recurrent tests (the suite runs
    with --import-mode=importlib, so the file is loaded by path)."""
    path = Path(__file__).with_name("test_nir_recurrent.py")
    spec = importlib.util.spec_from_file_location("_nir_recurrent_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the interop peers (tests/test_interop_<peer>.py) -------------------------

@pytest.fixture(scope="session")
def interop():
    """tests/interop_support.py: what the interop peer tests share (loaded by
    path, as ``H`` is; registered so that its dataclasses resolve)."""
    path = Path(__file__).with_name("interop_support.py")
    spec = importlib.util.spec_from_file_location("_interop_support", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def peer(request, interop):
    """The test module's ``PEER`` (``interop_support.Peer``: its Python and
    its runner); the test is skipped where that environment is not installed."""
    found = interop.Peer(request.module.PEER)
    if found.python is None:
        pytest.skip(found.missing)
    return found


@pytest.fixture(scope="module")
def peer_export(peer, interop, tmp_path_factory):
    """Factory: ``peer_export(kind, seed=0, samples=3, timesteps=16)``, the
    peer's own network of KIND (runners/protocol.py KINDS) exported by its
    runner (``interop_support.PeerExport``), made once per module and
    arguments."""
    made = {}

    def export(kind: str, seed: int = 0, samples: int = 3, timesteps: int = 16):
        key = (kind, seed, samples, timesteps)
        if key not in made:
            folder = tmp_path_factory.mktemp(f"{peer.name}-{kind}")
            report = peer.run("export", kind, folder / "g.nir", folder / "x.npy", folder / "y.npz",
                              "--seed", seed, "--samples", samples, "--timesteps", timesteps)
            made[key] = interop.PeerExport(report, folder / "g.nir", folder / "x.npy", folder / "y.npz")
        return made[key]
    return export
