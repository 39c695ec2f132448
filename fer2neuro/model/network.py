"""The convolutional SNN of SPEC §1 (paper Table 1).

Stateless layers (conv, batch norm, pooling, linear, dropout) run on all T
steps at once with time folded into the batch; only the neurons loop over
time. With direct encoding the input is constant, so conv1 + BN run once per
sample and their output is the constant input current of ``if1``.
"""
from __future__ import annotations

import torch
from torch import nn

from fer2neuro.model.config import ModelConfig
from fer2neuro.model.encoding import poisson_encode
from fer2neuro.model.neurons import DEFAULT_ENGINE, ENGINES, IFNeuron, LIFNeuron, check_engine  # noqa: F401

# Layers whose outputs are spikes, in data-flow order. The pooling layers are
# listed because every backend without max pooling lowers them to a sum pool
# feeding an IF neuron (SPEC §2), which spikes exactly when the max pool does.
SPIKING_LAYERS = ("if1", "pool1", "if2", "pool2", "lif1", "lif2", "lif_out")
NEURON_LAYERS = ("if1", "if2", "lif1", "lif2", "lif_out")


def fold(x: torch.Tensor) -> torch.Tensor:
    """(T, B, ...) -> (T*B, ...)"""
    return x.flatten(0, 1)


def unfold(x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """(T*B, ...) -> (T, B, ...)"""
    return x.unflatten(0, (timesteps, -1))


class TimeSharedDropout(nn.Module):
    """Dropout whose mask is drawn once per sample and reused at every time
    step (SpikingJelly's multi-step Dropout): a dropped synapse stays dropped
    for the whole presentation, instead of adding temporal noise."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (T, B, ...)
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x[0]).bernoulli_(1.0 - self.p).div_(1.0 - self.p)
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ConvSNN(nn.Module):
    """conv-BN-IF-pool x2, then three fully connected layers with LIF neurons."""

    def __init__(self, config: ModelConfig, engine: str = DEFAULT_ENGINE) -> None:
        super().__init__()
        self.config = config
        c, (h1, h2) = config.channels, config.hidden
        side = config.image_size // 4
        self.conv1 = nn.Conv2d(1, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.if1 = IFNeuron(config.v_threshold, engine)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.if2 = IFNeuron(config.v_threshold, engine)
        self.pool2 = nn.MaxPool2d(2)
        self.drop1 = TimeSharedDropout(config.dropout)
        self.fc1 = nn.Linear(c * side * side, h1, bias=False)
        self.lif1 = LIFNeuron(config.tau, config.v_threshold, engine)
        self.drop2 = TimeSharedDropout(config.dropout)
        self.fc2 = nn.Linear(h1, h2, bias=False)
        self.lif2 = LIFNeuron(config.tau, config.v_threshold, engine)
        self.fc3 = nn.Linear(h2, config.num_classes, bias=False)
        self.lif_out = LIFNeuron(config.tau, config.v_threshold, engine)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Gaussian initialisation (paper §2.4): He-normal weights, BN at (1, 0)."""
        for module in (self.conv1, self.conv2, self.fc1, self.fc2, self.fc3):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        for bn in (self.bn1, self.bn2):
            bn.reset_parameters()

    @property
    def engine(self) -> str:
        return self.if1.engine

    def set_engine(self, engine: str) -> "ConvSNN":
        """Run the neurons with ``engine`` (``ENGINES``) from now on."""
        for name in NEURON_LAYERS:
            getattr(self, name).engine = check_engine(engine)
        return self

    @property
    def timesteps(self) -> int:
        return self.config.timesteps

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The network input over time, (T, B, 1, H, W)."""
        if self.config.encoder == "poisson":
            return poisson_encode(images, self.timesteps, generator)
        return images.unsqueeze(0).expand(self.timesteps, *images.shape)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, *,
                with_currents: bool = False):
        """Output spikes (T, B, classes). ``x`` is a batch of images
        (B, 1, H, W) in [0, 1], encoded here, or an already encoded input
        (T, B, 1, H, W), e.g. the same Poisson trains given to another backend.
        ``with_currents``: also return the output layer's input currents
        (fc3's output, T, B, classes), for the losses that read them."""
        if with_currents:
            trace: dict[str, torch.Tensor] = {}
            spikes = self._run(x, generator, record=None, currents=trace)
            return spikes, trace["fc3"]
        return self._run(x, generator, record=None)

    @torch.no_grad()
    def record(self, x: torch.Tensor, generator: torch.Generator | None = None,
               membranes: bool = False) -> dict[str, torch.Tensor]:
        """Every spiking layer's output (T, B, ...) keyed by ``SPIKING_LAYERS``
        name, plus ``input`` (the encoded input, T steps) and, with
        ``membranes``, ``<layer>.v`` for each neuron layer. No gradients."""
        trace: dict[str, torch.Tensor] = {}
        self._run(x, generator, record=trace, membranes=membranes)
        return trace

    def _neuron(self, name: str, currents: torch.Tensor, trace, membranes: bool,
                steps: int | None = None) -> torch.Tensor:
        neuron = getattr(self, name)
        if trace is not None and membranes:
            spikes, v = neuron(currents, steps=steps, record_membrane=True)
            trace[f"{name}.v"] = v
        else:
            spikes = neuron(currents, steps=steps)
        if trace is not None:
            trace[name] = spikes
        return spikes

    def _pooled(self, name: str, pool: str, currents: torch.Tensor, T: int, trace, membranes: bool,
                steps: int | None = None) -> torch.Tensor:
        """A conv IF layer and the max pool after it. In training (no trace)
        the fused engine does both in one kernel, never writing the
        full-resolution spikes; recording needs them, so it pools apart."""
        if trace is None:
            pooled = getattr(self, name).maxpool2x2(currents, steps)
            if pooled is not None:
                return pooled
        s = self._neuron(name, currents, trace, membranes, steps)
        s = unfold(getattr(self, pool)(fold(s)), T)
        if trace is not None:
            trace[pool] = s
        return s

    def _run(self, x: torch.Tensor, generator, record, membranes: bool = False,
             currents: dict | None = None) -> torch.Tensor:
        T = self.timesteps
        if x.dim() == 4 and self.config.encoder == "direct":
            if record is not None:
                record["input"] = self.encode(x)
            current = self.bn1(self.conv1(x))                       # once per sample
            s = self._pooled("if1", "pool1", current, T, record, membranes, steps=T)
        else:
            inputs = self.encode(x, generator) if x.dim() == 4 else x
            if inputs.dim() != 5:
                raise ValueError(f"expected (B,1,H,W) images or (T,B,1,H,W) inputs, got {tuple(x.shape)}")
            T = inputs.shape[0]
            if record is not None:
                record["input"] = inputs
            current = unfold(self.bn1(self.conv1(fold(inputs))), T)
            s = self._pooled("if1", "pool1", current, T, record, membranes)
        current = unfold(self.bn2(self.conv2(fold(s))), T)
        s = self._pooled("if2", "pool2", current, T, record, membranes)
        s = self.drop1(s.flatten(2))
        s = self._neuron("lif1", unfold(self.fc1(fold(s)), T), record, membranes)
        s = self.drop2(s)
        s = self._neuron("lif2", unfold(self.fc2(fold(s)), T), record, membranes)
        out_current = unfold(self.fc3(fold(s)), T)
        if currents is not None:
            currents["fc3"] = out_current
        return self._neuron("lif_out", out_current, record, membranes)


def is_spiking_output(out: torch.Tensor) -> bool:
    """SNN outputs are spikes over time (T, B, K); the CNN's are logits (B, K)."""
    return out.dim() == 3


def predict(output: torch.Tensor) -> torch.Tensor:
    """Class with the most output spikes (or the largest logit, for the CNN);
    ties go to the lowest index (SPEC §1). ``torch.argmax`` returns the first
    maximal index, which is that rule."""
    return (output.sum(0) if is_spiking_output(output) else output).argmax(-1)


def build_model(config: ModelConfig, engine: str = DEFAULT_ENGINE) -> nn.Module:
    """The network ``config`` describes. ``engine`` chooses how the spiking
    neurons run (``ENGINES``); it changes speed, never the state_dict, the
    spikes or the gradients, so a checkpoint loads into either."""
    if config.model == "snn":
        return ConvSNN(config, engine=engine)
    if config.model == "cnn":
        from fer2neuro.model.cnn import ShallowCNN

        return ShallowCNN(config)
    raise AssertionError(config.model)
