"""The model as Loihi runs it, differentiable: quantisation-aware training.

Forward: the model is exported exactly as ``fer2neuro export`` exports it
(NIR graph -> Lava plan -> Loihi integers, fer2neuro/lowering) and its spikes
are computed by the loihi target's own batched integer simulator
(``LoihiProgram.integer_layers`` + ``simulate``): what the chip runs, not an
approximation of it. Every quantisation step is the export's (8-bit even
weights at the per-layer scale, row-balanced rounding, 13-bit bias mantissa
with exponent 6, odd integer thresholds, 12-bit decays, netx's weight bits).

Backward: a float proxy of the same integer network in torch. Per layer it
takes the *exact* spikes of the layer below, applies the exact integer
weights (with the gradient passed straight through to the float weights:
BatchNorm folded and gained as the lowering does), integrates u and v in the
integer units with Loihi's decays, and lets the gradient through each exact
spike with the arctan surrogate of the training model, measured in the float
model's units (integer state / (64 * scale)). So the gradient is computed at
(almost exactly) the states the chip visits; the forward values are exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fer2neuro.exporters.nir_export import batchnorm_fold, model_to_nir
from fer2neuro.lowering.lava_plan import build_plan
from fer2neuro.lowering.netx_file import NetxNetwork
from fer2neuro.lowering.quantise import quantize_layer
from fer2neuro.model.layers import Conv, Linear
from fer2neuro.model.network import ConvSNN
from fer2neuro.model.neuron_step import NeuronParams, surrogate_grad
from fer2neuro.targets.loihi import arithmetic as ar
from fer2neuro.targets.loihi.network import NETX_BIAS_EXP, LoihiLayer
from fer2neuro.targets.loihi.simulator import LoihiProgram, LoihiTarget, simulate

STATE_UNIT = 1 << ar.VTH_SHIFT        # a_in, bias and vth enter u and v shifted left by 6
PIXEL_LEVELS = 255                    # images are 8-bit: every input is a multiple of 1/255
FLOAT_UNITS = NeuronParams(threshold=0.0)   # the surrogate of a membrane already measured from its threshold
STATE_LIMIT = float(ar.MAX_UV)        # |u|, |v| < 2^23


def on_input_grid(weight, bias, scale: float, gain) -> tuple[np.ndarray, np.ndarray]:
    """A first convolution's (folded) weight and bias where the host's
    rounding of the input drive, ``even(I * scale)``, is exact for 8-bit
    images: weights times ``gain * scale / 255`` and the bias times ``gain *
    scale`` even integers. Fine-tuning trains through this grid and leaves
    the model on it, so that float and chip see the same drive."""
    weight = np.asarray(weight, dtype=np.float64)
    rows = weight.shape[0]
    per_row = scale * np.asarray(gain, dtype=np.float64).reshape(rows, -1)[:, 0]
    unit = (per_row / PIXEL_LEVELS).reshape(-1, *([1] * (weight.ndim - 1)))
    bias = np.zeros(rows) if bias is None else np.asarray(bias, dtype=np.float64).reshape(rows)
    return 2 * np.round(weight * unit / 2) / unit, 2 * np.round(bias * per_row / 2) / per_row


class ExactValue(torch.autograd.Function):
    """Forward: the exact (integer) value; backward: straight through to the proxy."""

    @staticmethod
    def forward(ctx, proxy: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
        return exact

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class ExactSpikes(torch.autograd.Function):
    """Forward: the simulator's spikes; backward: the training model's
    arctan surrogate at the proxy membrane ``h``, in float units (``unit``
    integer steps per 1.0)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, exact: torch.Tensor, threshold: float, unit: float) -> torch.Tensor:
        ctx.save_for_backward(h)
        ctx.threshold, ctx.unit = threshold, unit
        return exact

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (h,) = ctx.saved_tensors
        return grad * surrogate_grad((h - ctx.threshold) / ctx.unit, FLOAT_UNITS) / ctx.unit, None, None, None


@dataclass
class LayerPass:
    """One layer of a QAT forward pass, for the loss and the state report."""

    name: str
    spikes: torch.Tensor               # (T, B, *shape), exact, differentiable through the proxy
    currents: torch.Tensor | None      # the synaptic current a_in (T, B, *shape) in float units
    state_peak: float                  # largest |u| or |v| of the proxy, in float units
    state_excess: torch.Tensor         # differentiable: how far states go past half the 24-bit range


@dataclass
class QuantisedPass:
    layers: list[LayerPass]

    @property
    def output(self) -> torch.Tensor:
        return self.layers[-1].spikes

    @property
    def output_currents(self) -> torch.Tensor:
        return self.layers[-1].currents

    def spikes(self) -> dict[str, np.ndarray]:
        """Every layer's spikes (B, T, ...) uint8, as a target's Recording holds them."""
        return {p.name: p.spikes.detach().transpose(0, 1).to(torch.uint8).cpu().numpy() for p in self.layers}


class LoihiQAT:
    """``model`` as the loihi target runs its export, with gradients (module
    docstring). Each call quantises the model's current weights afresh."""

    def __init__(self, model: ConvSNN, emulate_overflow: bool = True) -> None:
        self.model = model
        self.emulate_overflow = emulate_overflow
        self.modules = {layer.name: layer for layer in model.layers}

    def program(self) -> LoihiProgram:
        """The loihi target opened on the model's export (its current weights),
        with the first convolution on the input grid under direct encoding."""
        with torch.no_grad():
            graph = model_to_nir(self.model)
        if self.model.config.encoder == "direct":
            plan = build_plan(graph, direct=True, target="loihi")
            node = graph.nodes[plan.layers[0].synapse]
            scale = quantize_layer(plan.layers[0], plan).scale
            node.weight, node.bias = on_input_grid(node.weight, node.bias, scale, plan.layers[0].gain)
        return LoihiTarget(emulate_overflow=self.emulate_overflow).open(graph)

    def exact_spikes(self, images: torch.Tensor, encoded: torch.Tensor | None = None, integer=None):
        """Every layer's spikes (B, T, ...) uint8 as the chip computes them, the
        integer network, and (direct encoding) the first layer's integer bias
        mantissas: the forward pass without the proxy."""
        cfg = self.model.config
        direct = cfg.encoder == "direct"
        network, layers, names = integer or self.program().integer_layers(direct, 1.0)
        input_bias = network.input_bias(images.detach().double().cpu().numpy()) if direct else None
        spikes = simulate(layers, names, input_bias=input_bias,
                          input_spikes=None if direct else encoded.detach().transpose(0, 1).cpu().numpy()
                          .astype(np.uint8),
                          timesteps=cfg.timesteps, emulate_overflow=self.emulate_overflow)
        return spikes, (network, layers, names), input_bias

    def __call__(self, images: torch.Tensor, encoded: torch.Tensor | None = None) -> QuantisedPass:
        """``images`` (B, 1, H, W) in [0, 1]; ``encoded`` (T, B, 1, H, W): the
        spike trains with Poisson encoding (default: drawn by the model)."""
        direct = self.model.config.encoder == "direct"
        if not direct and encoded is None:
            encoded = self.model.encode(images)
        exact, (network, layers, _), input_bias = self.exact_spikes(images, encoded)
        passes, below = [], None if direct else encoded.to(images.dtype)
        for plan_layer, layer in zip(network.plan.layers, layers):
            spikes = torch.from_numpy(exact[plan_layer.name]).transpose(0, 1).to(images.dtype)
            passes.append(self._layer(network, plan_layer, layer, images, below, spikes, input_bias))
            below = passes[-1].spikes
        return QuantisedPass(passes)

    # --- the proxy ------------------------------------------------------------

    def _float_synapse(self, synapse: str, dtype) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The synapse's float (weight, bias) with their gradients, as the NIR
        export computes them (BatchNorm folded), or None for a parameter-free
        synapse (a lowered max pool)."""
        layer = self.modules.get(synapse)
        if isinstance(layer, Conv):
            return batchnorm_fold(getattr(self.model, layer.name), getattr(self.model, layer.batchnorm), dtype)
        if isinstance(layer, Linear):
            fc = getattr(self.model, layer.name)
            return fc.weight.to(dtype), None if fc.bias is None else fc.bias.to(dtype)
        return None

    def _layer(self, network: NetxNetwork, plan_layer, layer: LoihiLayer, images, below, exact_spikes,
               input_bias) -> LayerPass:
        dtype = images.dtype
        name, scale = plan_layer.name, network.scales[plan_layer.name]
        unit = scale * STATE_UNIT                                  # integer state per 1.0 of float state
        gain = torch.as_tensor(np.array(plan_layer.gain, dtype=np.float64), dtype=dtype)
        float_synapse = self._float_synapse(plan_layer.synapse, dtype)
        if layer.kind == "input":                                   # direct encoding: the host computes conv1
            weight, bias = float_synapse
            current = nn.functional.conv2d(images, weight, bias, padding=self.modules[plan_layer.synapse].padding)
            exact = torch.as_tensor(ar.effective_bias(input_bias, NETX_BIAS_EXP), dtype=dtype)
            drive = ExactValue.apply(current * gain * unit, exact)        # (B, *shape), every step
            a_in = None
            currents = None
        else:
            bias_exact = torch.as_tensor(layer.bias, dtype=dtype)
            x = below.flatten(2) if layer.flatten_input else below
            steps, batch = x.shape[:2]
            frames = x.reshape(steps * batch, *x.shape[2:])
            w_exact = torch.as_tensor(layer.weight, dtype=dtype)
            if layer.kind == "dense":
                w_exact = w_exact * 2.0 ** layer.weight_exp
            if float_synapse is None:
                w = w_exact
                b_proxy = None
            else:
                weight, b = float_synapse
                per_neuron = gain.reshape(gain.shape[0], -1)[:, 0]
                shaped = per_neuron.view(-1, *([1] * (weight.dim() - 1)))
                w = ExactValue.apply(weight * shaped * scale, w_exact.reshape(weight.shape))
                b_proxy = None if b is None else b * per_neuron * unit
            if layer.kind == "conv":
                c = layer.conv
                a_in = nn.functional.conv2d(frames, w, stride=c["stride"], padding=c["padding"],
                                            dilation=c["dilation"], groups=c["groups"])
            else:
                a_in = frames @ w.reshape(w.shape[0], -1).T
            a_in = a_in.reshape(steps, batch, *a_in.shape[1:])
            if b_proxy is not None:
                b_proxy = b_proxy.view(-1, *([1] * (len(layer.shape) - 1))).expand(layer.shape)
                bias_exact = ExactValue.apply(b_proxy, bias_exact)
            drive = None
            currents = a_in / (scale * gain)
        u_keep = 1.0 - (layer.du + 1) / ar.DECAY_UNITY
        v_keep = 1.0 - layer.dv / ar.DECAY_UNITY
        threshold = float(layer.vth << ar.VTH_SHIFT)
        u = v = None
        spikes, peak, excess = [], 0.0, 0.0
        for t in range(exact_spikes.shape[0]):
            if drive is not None:
                h = drive if v is None else v * v_keep + drive
            else:
                inflow = a_in[t] * STATE_UNIT
                u = inflow if u is None or u_keep == 0 else u * u_keep + inflow
                h = (u if v is None else v * v_keep + u) + bias_exact
            s = ExactSpikes.apply(h, exact_spikes[t], threshold, unit)
            spikes.append(s)
            v = h - s * h                                           # reset to 0, as in training
            peak = max(peak, float(h.detach().abs().max()) / unit,
                       0.0 if u is None else float(u.detach().abs().max()) / unit)
            excess = excess + (torch.relu(h.abs() / STATE_LIMIT - 0.5) ** 2).mean()
        return LayerPass(name=name, spikes=torch.stack(spikes), currents=currents, state_peak=peak,
                         state_excess=excess)
