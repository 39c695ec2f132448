"""Checkpoints: the model config, class names and weights in one file that
``torch.load(weights_only=True)`` can read (no pickled code).

Integrity: ``save_checkpoint`` stores a SHA-256 of the weights
(:func:`tensor_digest`: every state_dict tensor's name, dtype, shape and
bytes, in sorted order) and ``load_checkpoint`` refuses a file whose weights
no longer match it, whose zip members fail their CRC (torch's reader does not
check them: a file with 2,000 damaged bytes loaded with fc1 weights of
~24,922), or whose floating-point tensors hold NaN or infinity, naming the
file and the tensor. A checkpoint written before the digest existed has no
``tensor_sha256`` and still loads (after the CRC and finiteness checks).

The model config and the fixed-point deployment record (scales, state
bounds) have their own SHA-256 (``config_sha256``, :func:`header_digest`);
a checkpoint from before it has none and still loads. Either way every
field is checked before use (``ModelConfig.__post_init__``, the one place
for a config; ``check_deployment``): a config whose hash was recomputed
after an edit (timesteps 2.5, tau NaN, a threshold of -1) is refused in one
line naming the file and the field, never built or exported.
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import fer2neuro
from fer2neuro.atomic import atomic_path
from fer2neuro.errors import CheckpointError, ConfigError, one_line
from fer2neuro.shown import shown
from fer2neuro.model.config import ModelConfig
from fer2neuro.model.layers import network_layers
from fer2neuro.model.network import build_model

FORMAT = "fer2neuro.checkpoint"
FORMAT_VERSION = 1
DIGEST_KEY = "tensor_sha256"            # hex SHA-256 of the state_dict (tensor_digest)
TRAIN_DIGEST_KEY = "train_state_sha256"  # hex SHA-256 of the tensors in train_state (optimizer, RNG states)
CONFIG_DIGEST_KEY = "config_sha256"      # hex SHA-256 of the config and deployment (header_digest)
ZIP_SIGNATURE = b"PK\x03\x04"
PICKLE_PROTOCOL = b"\x80"              # torch.save's legacy (pre-zip) format starts with a pickle


def tensor_digest(state_dict: dict) -> str:
    """SHA-256 over each tensor's name, dtype, shape and bytes, in sorted
    name order (a value that is not a tensor contributes its repr)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        h.update(name.encode("utf-8") + b"\0")
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            raw = t.reshape(-1).view(torch.uint8).numpy()
            h.update(f"{t.dtype}{tuple(t.shape)}{raw.nbytes}".encode() + b"\0")
            h.update(raw.tobytes())
        else:
            h.update(f"{type(value).__name__}:{value!r}".encode("utf-8", "replace") + b"\0")
    return h.hexdigest()


def header_digest(config: dict, deployment: dict) -> str:
    """SHA-256 of the model config and the deployment record as canonical
    JSON (sorted keys; a value JSON cannot hold contributes its repr)."""
    text = json.dumps({"config": config, "deployment": deployment}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def nested_tensors(obj, prefix: str = "") -> dict:
    """Every tensor inside nested dicts and lists, by its path ("optimizer/
    state/0/exp_avg"): what ``train_state_sha256`` covers."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    found = {}
    for key, value in items:
        found.update(nested_tensors(value, f"{prefix}/{key}" if prefix else str(key)))
    return found


def check_finite_state(state_dict: dict, where: str) -> None:
    """CheckpointError naming the first floating-point tensor that holds NaN
    or infinity (a weight, threshold, time constant or bias)."""
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                nan = int(torch.isnan(value).sum())
                raise CheckpointError(f"{where}: tensor {name!r} holds non-finite values ({nan} NaN, "
                                      f"{int((~finite).sum()) - nan} infinite of {value.numel()}); "
                                      "a checkpoint with non-finite weights cannot be used")


@dataclass
class Checkpoint:
    config: ModelConfig
    state_dict: dict
    epoch: int = 0
    metrics: dict = field(default_factory=dict)
    train_state: dict = field(default_factory=dict)   # optimizer, RNG, options: for --resume
    deployment: dict = field(default_factory=dict)    # fixed-point fine-tuning: {"qat": target, "state_bounds": ...}

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    def build(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
        """The model with these weights, in eval mode."""
        model = build_model(self.config)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            detail = " ".join(line.strip() for line in first[1:3]) if len(first) > 1 else first[0]
            raise CheckpointError(f"weights do not fit the {self.config.preset!r} network the checkpoint "
                                  f"describes: {detail[:300]}") from None
        if self.deployment:
            model.deployment = dict(self.deployment)
        return model.to(device=device, dtype=dtype).eval()


def save_checkpoint(path: str | Path, model: nn.Module, config: ModelConfig, *, epoch: int = 0,
                    metrics: dict | None = None, train_state: dict | None = None) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fer2neuro_version": fer2neuro.__version__,
        "config": config.to_dict(),
        CONFIG_DIGEST_KEY: header_digest(config.to_dict(), dict(getattr(model, "deployment", {}))),
        "state_dict": state,
        DIGEST_KEY: tensor_digest(state),
        TRAIN_DIGEST_KEY: tensor_digest(nested_tensors(train_state or {})),
        "epoch": epoch,
        "metrics": metrics or {},
        "train_state": train_state or {},
        "deployment": dict(getattr(model, "deployment", {})),
    }
    # Through a Python file object: torch.save then keeps the OSError of a
    # full disk as the context of its RuntimeError, which atomic_path reports
    # against ``path`` (written to a name, it says only "unexpected pos").
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)


def _unreadable(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: not a readable fer2neuro checkpoint ({why})")


def _torch_reason(exc: Exception) -> str:
    """torch.load's reason, short: its weights-only errors bury the cause
    under a page of advice ("... WeightsUnpickler error: Unsupported operand 101")."""
    text = str(exc).strip()
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()[:160]
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.split(". ")[0][:160]


def _read_payload(path: Path):
    """torch.load of ``path`` after checking what kind of file it is, with a
    one-line CheckpointError for anything torch.save did not write whole."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(ZIP_SIGNATURE):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()          # CRC of every member: torch's reader does not check them
        except Exception as exc:  # noqa: BLE001 - zipfile raises BadZipFile, EOFError, zlib.error...
            raise _unreadable(path, f"a damaged or truncated zip archive: {one_line(exc, 120)}") \
                from None
        if bad is not None:
            raise CheckpointError(f"{path}: the checkpoint file is corrupt (member {bad.split('/', 1)[-1]!r} "
                                  "fails its CRC check: the bytes changed after it was written)")
    elif not head.startswith(PICKLE_PROTOCOL):
        if not head:
            raise _unreadable(path, "the file is empty")
        if head.startswith(b"\x89HDF"):
            raise _unreadable(path, "it is an HDF5 file, e.g. a .nir graph, not a file torch.save wrote")
        try:
            with open(path, "rb") as f:
                f.read(4096).decode("utf-8")
            kind = "it is a text file"
        except UnicodeDecodeError:
            kind = "unknown format"
        raise _unreadable(path, f"{kind}, not a file torch.save wrote")
    try:
        with warnings.catch_warnings():          # torch warns about pickles before refusing one
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on bad bytes
        raise _unreadable(path, f"the file is damaged: {_torch_reason(exc)}") from None


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    payload = _read_payload(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = "a bare state_dict" if isinstance(payload, dict) and payload and all(
            isinstance(v, torch.Tensor) for v in payload.values()) else f"a {type(payload).__name__}"
        raise CheckpointError(f"{path}: not a fer2neuro checkpoint (it holds {what}, "
                              f"no {FORMAT!r} header)")
    version = payload.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path}: invalid checkpoint format_version {shown(version)} (an integer)")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {payload['format_version']} is newer than "
                              f"this fer2neuro understands ({FORMAT_VERSION}); upgrade fer2neuro")
    config, deployment, epoch = _checked_header(path, payload)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the checkpoint holds no state_dict of weights")
    saved = payload.get(DIGEST_KEY)
    if saved is not None and saved != tensor_digest(state):
        raise CheckpointError(f"{path}: the checkpoint file is corrupt (its weights do not match the "
                              "SHA-256 saved with them: the bytes changed after it was written)")
    saved = payload.get(TRAIN_DIGEST_KEY)
    if saved is not None and saved != tensor_digest(nested_tensors(payload.get("train_state") or {})):
        raise CheckpointError(f"{path}: the checkpoint file is corrupt (its training state, the optimizer or "
                              "RNG state --resume needs, does not match the SHA-256 saved with it)")
    check_finite_state(state, str(path))
    metrics, train_state = payload.get("metrics", {}), payload.get("train_state", {})
    for name, value in (("metrics", metrics), ("train_state", train_state)):
        if not isinstance(value, dict):
            raise CheckpointError(f"{path}: {name} must be a mapping, got {shown(value)}")
    return Checkpoint(config=config, state_dict=state, epoch=epoch, metrics=metrics, train_state=train_state,
                      deployment=deployment)


def _checked_header(path: Path, payload: dict) -> tuple[ModelConfig, dict, int]:
    """The config, deployment record and epoch, each checked: against the
    SHA-256 saved with them (if the file has one), then field by field."""
    deployment = payload.get("deployment", {})
    saved = payload.get(CONFIG_DIGEST_KEY)
    try:
        digest = header_digest(payload.get("config"), deployment)
    except (TypeError, ValueError, RecursionError):     # keys JSON cannot sort: not what save_checkpoint wrote
        digest = None
    if saved is not None and saved != digest:
        raise CheckpointError(f"{path}: the checkpoint file is corrupt (its model config or deployment record "
                              "does not match the SHA-256 saved with it: the bytes changed after it was written)")
    if "config" not in payload:
        raise CheckpointError(f"{path}: invalid model config in checkpoint (the checkpoint holds none)")
    try:
        config = ModelConfig.from_dict(payload["config"])
    except (ConfigError, TypeError) as exc:         # TypeError: a field that ModelConfig does not take
        raise CheckpointError(f"{path}: invalid model config in checkpoint ({exc})") from None
    problem = deployment_problem(deployment, config)
    if problem:
        raise CheckpointError(f"{path}: invalid deployment record in checkpoint ({problem})")
    epoch = payload.get("epoch", 0)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise CheckpointError(f"{path}: invalid epoch in checkpoint (a count from 0, got {shown(epoch)})")
    return config, deployment, epoch


def deployment_problem(deployment, config: ModelConfig) -> str | None:
    """What is wrong with a fixed-point fine-tuning record (``qat/finetune``:
    the target and scale rule by name, a positive finite scale and state
    bound per neuron layer of the network), or None."""
    if not isinstance(deployment, dict):
        return f"a mapping, got a {type(deployment).__name__}"
    for key in ("qat", "scale_rule"):
        if key in deployment and not isinstance(deployment[key], str):
            return f"{key} must be a name, got {shown(deployment[key])}"
    for key in ("state_bounds", "scales"):
        values = deployment.get(key, {})
        if not isinstance(values, dict):
            return f"{key} must map layer names to numbers, got {shown(values)}"
        layers = {layer.name for layer in network_layers(config)} if values else set()
        for name, value in values.items():
            if name not in layers:
                return f"{key}: no layer {shown(name)} in the network"
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                return f"{key}[{name!r}] must be a finite number > 0, got {shown(value)}"
    return None


def load_model(path: str | Path, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Checkpoint]:
    ckpt = load_checkpoint(path)
    return ckpt.build(device, dtype), ckpt
