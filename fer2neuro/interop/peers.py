"""The peer NIR tools and how fer2neuro reaches them: each lives in its own
virtual environment (``make peers``, requirements/peers/README.md) and is
driven through a runner script run with that environment's Python, which
exchanges ``.nir``, ``.npy`` and ``.npz`` files with fer2neuro
(runners/protocol.py).

Where a peer's environment is: ``$FER2NEURO_PEERS/<peer>/bin/python`` when
that variable is set, else ``.peers/<peer>/bin/python`` in the source tree.
snnTorch is also a core dependency of fer2neuro, at the pinned version: when
its peer environment is missing, fer2neuro's own interpreter is that peer
(the same snnTorch, nir and nirtorch releases as requirements/peers/snntorch.txt).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer2neuro.errors import ConfigError
from fer2neuro.interop.runners.protocol import REPORT_PREFIX

PEERS = {                       # name (nirgraph.dialects.PEERS) -> the tool and version its environment pins
    "snntorch": "snnTorch 1.0.0",
    "norse": "Norse 1.1.0",
    "sinabs": "Sinabs 3.1.3",
    "rockpool": "Rockpool 3.1.0",
    "spyx": "Spyx 1.0.0",
}
RUNNERS = Path(__file__).parent / "runners"
SOURCE_TREE = Path(__file__).resolve().parents[2]
TIMEOUT_S = 900                 # one runner call; JAX and torch start-up included


def peers_folder() -> Path:
    return Path(os.environ.get("FER2NEURO_PEERS") or SOURCE_TREE / ".peers")


def _own_snntorch() -> bool:
    try:
        from importlib.metadata import version
        return version("snntorch") == "1.0.0" and version("nirtorch") == "2.6"
    except Exception:  # noqa: BLE001 - a missing distribution: not this peer
        return False


def python_of(peer: str) -> Path | None:
    """The peer environment's Python, or None when it is not installed."""
    python = peers_folder() / peer / "bin" / "python"
    if python.exists():
        return python
    if peer == "snntorch" and _own_snntorch():
        return Path(sys.executable)
    return None


def installed() -> list[str]:
    return [p for p in PEERS if python_of(p) is not None]


def parse_peers(value: str | None) -> list[str]:
    """"installed" (the default), "all", or a comma-separated list."""
    if value in (None, "", "installed"):
        return installed()
    if value == "all":
        return list(PEERS)
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ConfigError(f"unknown peer {', '.join(unknown)}: use installed, all, or some of {', '.join(PEERS)}")
    return list(dict.fromkeys(names))


@dataclass
class PeerResult:
    """What one runner call gave: its report, and the spikes by node name."""

    peer: str
    report: dict = field(default_factory=dict)
    spikes: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def installed(self) -> bool:
        return self.report.get("stage") != "missing"

    @property
    def loaded(self) -> bool:
        return bool(self.report.get("loaded"))

    @property
    def ran(self) -> bool:
        return bool(self.report.get("ran"))

    @property
    def error(self) -> str | None:
        return self.report.get("error")

    @property
    def version(self) -> str:
        return self.report.get("version") or ""


def _missing(peer: str) -> PeerResult:
    return PeerResult(peer, {"peer": peer, "stage": "missing", "loaded": False, "ran": False,
                             "error": f"{PEERS[peer]} is not installed: make peer-{peer} "
                                      f"(or set FER2NEURO_PEERS)"})


def call_runner(peer: str, args: list[str], timeout: float = TIMEOUT_S) -> dict:
    """Run ``runners/<peer>.py ARGS`` with the peer's Python in its own
    process group (killed whole on a time-out or when we are interrupted)
    and return its report."""
    python = python_of(peer)
    env = {**os.environ, "PYTHONNOUSERSITE": "1", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen([str(python), str(RUNNERS / f"{peer}.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    lines = [line for line in out.splitlines() if line.startswith(REPORT_PREFIX)]
    if not lines:
        tail = " ".join((err or out).strip().splitlines()[-1:])[:300]
        return {"peer": peer, "stage": "runner", "loaded": False, "ran": False,
                "error": f"the {peer} runner exited {proc.returncode} without a report ({tail})"}
    return json.loads(lines[-1][len(REPORT_PREFIX):])


def _load_record(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {name: np.asarray(data[name]) for name in data.files}


def run_peer(peer: str, graph_path, inputs: np.ndarray, dt: float | None = None) -> PeerResult:
    """``graph_path`` loaded by the peer's own NIR importer and run by its
    own simulator on ``inputs`` (B, T, *input_shape)."""
    if python_of(peer) is None:
        return _missing(peer)
    with tempfile.TemporaryDirectory(prefix=f"fer2neuro-{peer}-") as tmp:
        x, out = Path(tmp) / "inputs.npy", Path(tmp) / "spikes.npz"
        np.save(x, np.asarray(inputs, dtype=np.float64))
        args = ["run", str(Path(graph_path).resolve()), str(x), str(out)]
        if dt is not None:
            args += ["--dt", repr(float(dt))]
        report = call_runner(peer, args)
        return PeerResult(peer, report, _load_record(out) if report.get("ran") else {})


def export_peer(peer: str, kind: str, graph_path, seed: int = 0, samples: int = 4,
                timesteps: int = 20) -> tuple[PeerResult, np.ndarray | None]:
    """The peer's own network of ``kind`` exported by its own NIR exporter to
    ``graph_path``, with its inputs and its own spikes."""
    if python_of(peer) is None:
        return _missing(peer), None
    with tempfile.TemporaryDirectory(prefix=f"fer2neuro-{peer}-") as tmp:
        x, out = Path(tmp) / "inputs.npy", Path(tmp) / "spikes.npz"
        report = call_runner(peer, ["export", kind, str(Path(graph_path).resolve()), str(x), str(out),
                                    "--seed", str(seed), "--samples", str(samples),
                                    "--timesteps", str(timesteps)])
        inputs = np.load(x) if report.get("ran") and x.exists() else None
        return PeerResult(peer, report, _load_record(out) if report.get("ran") else {}), inputs
