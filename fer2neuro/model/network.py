"""The convolutional SNN of SPEC §1 (paper Table 1), built from and run
through the layer table of :mod:`fer2neuro.model.layers`.

Stateless layers (conv, batch norm, pooling, linear, dropout) run on all T
steps at once with time folded into the batch; only the neurons loop over
time. With direct encoding the input is constant, so conv1 + BN run once per
sample and their output is the constant input current of ``if1``.
"""
from __future__ import annotations

import torch
from torch import nn

from fer2neuro.model.config import ModelConfig
from fer2neuro.nirgraph.readout import decide, output_membrane
from fer2neuro.model.encoding import poisson_encode
from fer2neuro.model.layers import NEURON_KINDS, SPIKING_KINDS, SYNAPTIC_KINDS, Layer, MaxPool, network_layers
from fer2neuro.model.neurons import DEFAULT_ENGINE, ENGINES, IFNeuron, LIFNeuron, check_engine  # noqa: F401


def fold(x: torch.Tensor) -> torch.Tensor:
    """(T, B, ...) -> (T*B, ...)"""
    return x.flatten(0, 1)


def unfold(x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """(T*B, ...) -> (T, B, ...)"""
    return x.unflatten(0, (timesteps, -1))


def per_step(layer, x: torch.Tensor, steps: int | None, timesteps: int) -> torch.Tensor:
    """A stateless layer on every time step: once per sample if ``x`` is held
    constant for ``steps`` steps (direct encoding, before the first neuron
    layer), else on all T steps at once with time folded into the batch."""
    return layer(x) if steps else unfold(layer(fold(x)), timesteps)


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


def layer_modules(layer: Layer, engine: str) -> dict[str, nn.Module]:
    """The modules that compute ``layer``, by attribute name (a flatten needs none)."""
    if layer.kind == "conv":
        return {layer.name: nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                      padding=layer.padding, bias=False),
                layer.batchnorm: nn.BatchNorm2d(layer.out_channels)}
    if layer.kind == "if":
        return {layer.name: IFNeuron(layer.v_threshold, engine)}
    if layer.kind == "lif":
        return {layer.name: LIFNeuron(layer.tau, layer.v_threshold, engine)}
    if layer.kind == "maxpool":
        return {layer.name: nn.MaxPool2d(layer.kernel_size)}
    if layer.kind == "dropout":
        return {layer.name: TimeSharedDropout(layer.p)}
    if layer.kind == "linear":
        return {layer.name: nn.Linear(layer.in_features, layer.out_features, bias=False)}
    return {}


class ConvSNN(nn.Module):
    """The spiking network of ``config.blocks``: conv-BN-IF[-pool] blocks, then
    fully connected layers with LIF (or IF) neurons, then the LIF output
    layer. The paper's network (SPEC §1) is its default."""

    def __init__(self, config: ModelConfig, engine: str = DEFAULT_ENGINE) -> None:
        super().__init__()
        # How the model deploys to a fixed-point target, set by QAT fine-tuning
        # (fer2neuro.qat) and kept in the checkpoint: {"qat": "loihi",
        # "state_bounds": {layer: float}}. Empty for a float-trained model.
        self.deployment: dict = {}
        self.config = config
        self.layers = network_layers(config)       # what it is built from and runs through
        for layer in self.layers:
            for name, module in layer_modules(layer, engine).items():
                self.add_module(name, module)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Gaussian initialisation (paper §2.4): He-normal weights, BN at (1, 0)."""
        for layer in self.layers:
            if layer.kind in SYNAPTIC_KINDS:
                nn.init.kaiming_normal_(getattr(self, layer.name).weight, nonlinearity="relu")
            if layer.kind == "conv":
                getattr(self, layer.batchnorm).reset_parameters()

    @property
    def spiking_layers(self) -> tuple[str, ...]:
        """Layers whose outputs are spikes, in data-flow order. The pooling
        layers are listed because every backend without max pooling lowers
        them to a sum pool feeding an IF neuron (SPEC §2), which spikes
        exactly when the max pool does."""
        return tuple(layer.name for layer in self.layers if layer.kind in SPIKING_KINDS)

    @property
    def neuron_layers(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers if layer.kind in NEURON_KINDS)

    @property
    def engine(self) -> str:
        return getattr(self, self.neuron_layers[0]).engine

    def set_engine(self, engine: str) -> "ConvSNN":
        """Run the neurons with ``engine`` (``ENGINES``) from now on."""
        for name in self.neuron_layers:
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
        (the last linear layer's output, T, B, classes), for the losses that read them."""
        if with_currents:
            inputs: dict[str, torch.Tensor] = {}
            spikes = self._run(x, generator, record=None, currents=inputs)
            return spikes, inputs[self.layers[-1].name]
        return self._run(x, generator, record=None)

    @torch.no_grad()
    def record(self, x: torch.Tensor, generator: torch.Generator | None = None,
               membranes: bool = False, until: str | None = None) -> dict[str, torch.Tensor]:
        """Every spiking layer's output (T, B, ...) keyed by its name
        (``spiking_layers``), plus ``input`` (the encoded input, T steps) and, with
        ``membranes``, ``<layer>.v`` for each neuron layer. No gradients.
        ``until``: stop after that layer (the initialisations look at one
        layer many times)."""
        trace: dict[str, torch.Tensor] = {}
        self._run(x, generator, record=trace, membranes=membranes, until=until)
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

    def _inputs(self, x: torch.Tensor, generator, record) -> tuple[torch.Tensor, int | None]:
        """The input of the first layer and, for direct-encoded images, the
        number of steps it is held constant for (then it is (B, 1, H, W),
        else (T, B, 1, H, W))."""
        if x.dim() == 4 and self.config.encoder == "direct":
            if record is not None:
                record["input"] = self.encode(x)
            return x, self.timesteps
        inputs = self.encode(x, generator) if x.dim() == 4 else x
        if inputs.dim() != 5:
            raise ValueError(f"expected (B,1,H,W) images or (T,B,1,H,W) inputs, got {tuple(x.shape)}")
        if record is not None:
            record["input"] = inputs
        return inputs, None

    def _run(self, x: torch.Tensor, generator, record, membranes: bool = False,
             currents: dict | None = None, until: str | None = None) -> torch.Tensor:
        """Walk the layer table. ``currents`` collects each neuron layer's input."""
        s, steps = self._inputs(x, generator, record)
        T = steps or s.shape[0]
        pooled = None    # a neuron layer's spikes, already max-pooled by the fused engine
        for layer, after in zip(self.layers, self.layers[1:] + (None,)):
            if layer.kind == "conv":
                conv, batchnorm = getattr(self, layer.name), getattr(self, layer.batchnorm)
                s = per_step(lambda z: batchnorm(conv(z)), s, steps, T)
            elif layer.kind in NEURON_KINDS:
                if currents is not None:
                    currents[layer.name] = s
                # In training (no trace) the fused engine does a conv IF layer and
                # the 2x2 max pool after it in one kernel, never writing the
                # full-resolution spikes; recording needs them, so it pools apart.
                if record is None and isinstance(after, MaxPool) and after.kernel_size == 2:
                    pooled = getattr(self, layer.name).maxpool2x2(s, steps)
                s = pooled if pooled is not None else self._neuron(layer.name, s, record, membranes, steps)
                steps = None
            elif layer.kind == "maxpool":
                if pooled is None:
                    s = per_step(getattr(self, layer.name), s, steps, T)
                    if record is not None:
                        record[layer.name] = s
                pooled = None
            elif layer.kind == "flatten":
                s = s.flatten(-len(layer.input_shape))
            elif layer.kind == "dropout":
                s = getattr(self, layer.name)(s)
            elif layer.kind == "linear":
                s = per_step(getattr(self, layer.name), s, steps, T)
            if layer.name == until:
                break
        return s


def is_spiking_output(out: torch.Tensor) -> bool:
    """SNN outputs are spikes over time (T, B, K); the CNN's are logits (B, K)."""
    return out.dim() == 3


def predict(output: torch.Tensor, currents: torch.Tensor | None = None, tau: float = 2.0) -> torch.Tensor:
    """Class with the most output spikes (or the largest logit, for the CNN).
    With the output layer's input ``currents`` (T, B, K) and its ``tau``,
    ties go to the highest output membrane (``nirgraph/readout.py``), else to the
    lowest index."""
    if not is_spiking_output(output):
        return output.argmax(-1)
    membrane = None if currents is None else output_membrane(currents.double(), output, tau)
    return decide(output.sum(0), membrane)


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
