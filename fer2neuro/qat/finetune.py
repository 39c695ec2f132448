"""``fer2neuro finetune CKPT --qat loihi``: fine-tune a float checkpoint
through the integer network Loihi runs (loihi.py), and measure what that
changed: float accuracy, fixed-point accuracy and their prediction
agreement, before and after.

The loss has three parts:
- the task loss on the fixed-point output (its spike counts, and for
  ``current-ce`` its synaptic currents), as in training;
- agreement: the mean squared difference of the fixed-point and float
  output rates of the same weights, so that the float checkpoint and its
  export end up classifying alike (both sides get the gradient);
- state range: a penalty on membranes beyond half of Loihi's 24 bits.

Before the first step, the largest |u| and |v| each layer reaches on the
first 2,048 training faces is measured and stored in the checkpoint
(``deployment``); the quantiser then sets the layer's scale so that twice
that fits in 24 bits (fer2neuro/lowering/quantise.py). The bounds are measured again over
every epoch. BatchNorm keeps its running statistics (folded, as exported).
At the end the float weights are set onto the integers (``snap_to_integers``).
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from fer2neuro.progress import progress_bar
from fer2neuro.verification.run import deciding

from fer2neuro.atomic import write_text
from fer2neuro.data import canonical_split, load_splits
from fer2neuro.errors import CheckpointError, ConfigError, TargetError
from fer2neuro.exporters.nir_export import model_to_nir
from fer2neuro.lowering.quantise import QuantisedNetwork, quantise
from fer2neuro.memory import check_fits, model_values, steps_bytes
from fer2neuro.model.layers import Conv, Linear
from fer2neuro.model.checkpoint import load_model, save_checkpoint
from fer2neuro.model.encoding import poisson_generator
from fer2neuro.model.network import ConvSNN, predict
from fer2neuro.qat import QAT_TARGETS
from fer2neuro.qat.loihi import LoihiQAT, on_input_grid
from fer2neuro.targets.loihi.simulator import LoihiTarget
from fer2neuro.training.loop import Batches
from fer2neuro.training.losses import check_loss, output_loss

CALIBRATION_BATCHES = 32      # 2,048 training faces measure the states before the first step


@dataclass
class FinetuneOptions:
    checkpoint: str
    out: str
    qat: str = "loihi"
    data: str = "synthetic"
    ferplus: str | None = None
    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-4
    loss: str = "rate-mse"
    agreement_weight: float = 1.0
    state_weight: float = 1.0
    limit: int | None = None            # training samples
    eval_split: str = "PublicTest"
    eval_limit: int | None = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.qat not in QAT_TARGETS:
            raise ConfigError(f"--qat {self.qat!r}: fer2neuro fine-tunes for {', '.join(QAT_TARGETS)}")
        check_loss(self.loss)


@torch.no_grad()
def deployment_agreement(model: ConvSNN, dataset, *, batch_size: int = 64, seed: int = 0,
                         progress: bool = False) -> dict:
    """Float (float64) and fixed-point (the loihi target on the model's export,
    overflow an error) accuracy on ``dataset``, and how often their
    predictions agree, on the same inputs."""
    reference = copy.deepcopy(model).double().eval()
    graph = model_to_nir(model)
    program = LoihiTarget().open(graph)
    decide_fixed = deciding(graph)                       # verify's rule: ties by the output membrane
    generator = poisson_generator(seed)
    labels, float_pred, fixed_pred = [], [], []
    overflow = None
    for x, y in progress_bar(Batches(dataset, batch_size, torch.device("cpu")), desc="loihi vs float", leave=False,
                     disable=not progress, unit="batch"):
        encoded = reference.encode(x.double(), generator)
        out, currents = reference(x.double() if reference.config.encoder == "direct" else encoded,
                                  with_currents=True)
        float_pred.append(predict(out, currents, reference.config.tau))
        labels.append(y)
        if overflow is None:
            try:
                recorded = program.run(encoded.transpose(0, 1).numpy(), batch_size=batch_size).outputs
                fixed_pred.append(torch.from_numpy(np.asarray(decide_fixed(recorded))))
            except TargetError as exc:
                overflow = str(exc)
    labels_t, float_t = torch.cat(labels), torch.cat(float_pred)
    result = {"samples": len(labels_t), "float_accuracy": float((float_t == labels_t).float().mean())}
    if overflow is not None:
        return {**result, "fixed_accuracy": None, "agreement": None, "overflow": overflow}
    fixed_t = torch.cat(fixed_pred)
    return {**result, "fixed_accuracy": float((fixed_t == labels_t).float().mean()),
            "agreement": float((fixed_t == float_t).float().mean()), "overflow": None}


@torch.no_grad()
def measure_state_bounds(qat: LoihiQAT, batches) -> dict[str, float]:
    """Largest |u| or |v| per layer, in float units, over ``batches``."""
    peaks: dict[str, float] = {}
    for x, _ in batches:
        for layer in qat(x).layers:
            peaks[layer.name] = max(peaks.get(layer.name, 0.0), layer.state_peak)
    return measured(peaks)


def measured(peaks: dict[str, float]) -> dict[str, float]:
    """The bounds worth keeping: a layer whose state never left 0 on these
    faces (a silent layer of a barely trained model) says nothing about its
    range, and a bound of 0 would make no scale fit; its weights alone set
    its scale, as for a model never fine-tuned."""
    return {name: peak for name, peak in peaks.items() if peak > 0}


def _set_folded(model: ConvSNN, layer: Conv, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Make conv + BN (eval) compute ``weight`` and ``bias`` once folded: the
    convolution and the BN shift absorb them, BN keeps its statistics."""
    conv, bn = getattr(model, layer.name), getattr(model, layer.batchnorm)
    factor = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    if not torch.all(factor != 0):
        raise CheckpointError(f"{layer.batchnorm}: a zero BatchNorm scale cannot carry the integer weights")
    conv.weight.copy_(weight / factor.view(-1, 1, 1, 1))
    bn.bias.copy_(bias + bn.running_mean.double() * factor)


@torch.no_grad()
def snap_to_integers(model: ConvSNN, network: QuantisedNetwork) -> dict[str, float]:
    """Set the float weights to the integer network's divided by its scales
    and gains, and return the scales. The float model then computes what the
    integers compute, and its export at these scales is this integer network
    again.

    With direct encoding the host turns each image into the first layer's
    integer drive, ``even(I * s)``. The first convolution is put on the grid
    where that rounding is exact for 8-bit images: folded weights times
    ``gain * s / 255`` and the bias times ``gain * s`` even integers. Then
    every layer computes in float what it computes in integers (up to float
    rounding, far from the odd thresholds)."""
    modules = {layer.name: layer for layer in model.layers}
    plan = network.plan
    for plan_layer, q in zip(plan.layers, network.layers):
        layer = modules.get(plan_layer.synapse)
        if not isinstance(layer, (Conv, Linear)):
            continue
        gain = np.asarray(plan_layer.gain, dtype=np.float64)
        rows = gain.shape[0]
        gain = gain.reshape(rows, -1)[:, 0]
        if q.weight is None:                       # the host-computed first synapse (direct encoding)
            weight, bias = on_input_grid(plan.first_synapse.weight, plan.first_synapse.bias, q.scale,
                                         plan_layer.gain)
            _set_folded(model, layer, torch.from_numpy(weight), torch.from_numpy(bias))
            continue
        per_row = torch.from_numpy(q.scale * gain).view(-1, *([1] * (q.weight.ndim - 1)))
        weight = torch.from_numpy(q.weight.astype(np.float64)) / per_row
        if isinstance(layer, Linear):
            getattr(model, layer.name).weight.copy_(weight)
            continue
        bias = np.zeros(rows) if q.bias is None else q.bias.reshape(rows, -1)[:, 0] / (q.scale * gain)
        _set_folded(model, layer, weight, torch.from_numpy(bias))
    return network.scales()


def qat_loss(model: ConvSNN, qat: LoihiQAT, x, y, options: FinetuneOptions):
    """(loss, fixed-point output spikes, per-layer state peaks) of one batch."""
    encoded = None if model.config.encoder == "direct" else model.encode(x)
    quantised = qat(x, encoded)
    fixed = quantised.output
    loss = output_loss(fixed, y, 0.0, options.loss, quantised.output_currents)
    if options.agreement_weight:
        float_out = model(x if encoded is None else encoded)
        loss = loss + options.agreement_weight * ((fixed.mean(0) - float_out.mean(0)) ** 2).mean()
    if options.state_weight:
        loss = loss + options.state_weight * sum(layer.state_excess for layer in quantised.layers)
    return loss, fixed, {layer.name: layer.state_peak for layer in quantised.layers}


def train_through_integers(model: ConvSNN, qat: LoihiQAT, batches, options: FinetuneOptions) -> list[dict]:
    """The fine-tuning epochs; after each, the layers' state bounds are the
    largest states that epoch reached. Returns one record per epoch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    history = []
    for epoch in range(1, options.epochs + 1):
        start, total, correct, seen, peaks = time.perf_counter(), 0.0, 0, 0, {}
        bar = progress_bar(batches, desc=f"qat {epoch}/{options.epochs}", leave=False, disable=not options.progress,
                   unit="batch")
        for x, y in bar:
            loss, fixed, batch_peaks = qat_loss(model, qat, x, y, options)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(y)
            correct += int((predict(fixed.detach()) == y).sum())
            seen += len(y)
            peaks = {k: max(peaks.get(k, 0.0), v) for k, v in batch_peaks.items()}
        model.deployment["state_bounds"] = measured(peaks)
        history.append({"epoch": epoch, "loss": total / seen, "fixed_train_accuracy": correct / seen,
                        "seconds": time.perf_counter() - start, "state_bounds": dict(peaks)})
    return history


def finetune(options: FinetuneOptions) -> dict:
    out = Path(options.out)
    if (out / "best.pt").exists():
        raise ConfigError(f"{out} already holds a fine-tuned model; choose another --out")
    model, ckpt = load_model(options.checkpoint, "cpu")
    if not isinstance(model, ConvSNN):
        raise CheckpointError(f"{options.checkpoint}: only a spiking ConvSNN deploys to {options.qat}")
    steps = model.config.timesteps          # a batch's activations over T, kept for the backward pass
    check_fits(steps_bytes(timesteps=steps, values=model_values(model.config), batch=options.batch_size, itemsize=4),
               f"fine-tuning batches of {options.batch_size} over the checkpoint's T={steps}", "--batch-size")
    torch.manual_seed(options.seed)
    splits = load_splits(options.data, {"Training": options.limit, options.eval_split: options.eval_limit},
                         ferplus=options.ferplus, seed=options.seed)
    train_set, eval_set = splits["Training"], splits[canonical_split(options.eval_split)]
    if tuple(train_set.class_names) != tuple(ckpt.class_names):
        raise CheckpointError(f"{options.checkpoint} was trained on classes ({', '.join(ckpt.class_names)}) "
                              f"but {options.data} has ({', '.join(train_set.class_names)})")
    before = deployment_agreement(model, eval_set, seed=options.seed, progress=options.progress)
    qat = LoihiQAT(model)
    model.eval()                     # BatchNorm folded with its running statistics, as exported
    generator = torch.Generator().manual_seed(options.seed)
    batches = Batches(train_set, options.batch_size, torch.device("cpu"), shuffle=True, flip=True,
                      generator=generator)
    calibration = islice(Batches(train_set, 64, torch.device("cpu")), CALIBRATION_BATCHES)
    # leaky layers at power-of-two scales, where float64 and integers agree exactly (quantise.dyadic_scale)
    model.deployment = {"qat": options.qat, "scale_rule": "power_of_two"}
    model.deployment["state_bounds"] = measure_state_bounds(qat, calibration)
    history = train_through_integers(model, qat, batches, options)
    with torch.no_grad():
        network = quantise(model_to_nir(model), direct=model.config.encoder == "direct", target=options.qat)
    model.deployment["scales"] = snap_to_integers(model, network)
    after = deployment_agreement(model, eval_set, seed=options.seed, progress=options.progress)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"checkpoint": str(options.checkpoint), "options": asdict(options),
               "eval_split": canonical_split(options.eval_split), "before": before, "after": after,
               "history": history, "deployment": model.deployment}
    save_checkpoint(out / "best.pt", model, ckpt.config, epoch=ckpt.epoch,
                    metrics={**ckpt.metrics, "qat": metrics})
    write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return metrics
