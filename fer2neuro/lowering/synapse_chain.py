"""A run of stateless NIR nodes between two neuron layers, as the one
synapse a Lava or Loihi layer has.

Lava's (and Loihi's) layer is one synapse (Dense or Conv) feeding one neuron
population, so a chain such as ``SumPool2d -> Conv2d`` (the NIR paper's
Sinabs CNN), ``Conv2d -> Flatten -> Affine`` or ``Scale -> AvgPool2d ->
Conv2d`` must become one synapse. The composition is exact as linear algebra
(the composed float64 weights are sums of products of the original ones, so
a sum can round differently from the sequential one in its last bit):

- a single Conv2d, SumPool2d, Linear or Affine (after an optional Flatten)
  is taken as it is;
- a chain of convolution-like nodes (Conv2d, SumPool2d, AvgPool2d, a Scale
  that is one factor per channel) becomes one convolution: with A then B,
  ``C[o, i, s_A*d_B*j + d_A*k] += B[o, c, j] * A[c, i, k]``, stride
  ``s_A*s_B``, padding ``s_A*p_B + p_A``, bias ``b_B + sum(B) b_A``. This is
  exact only if B's zero padding stands for outputs of A that are zero: a
  padded B after an A with a bias, or after an A whose last window drops
  input rows, is refused (the composition is checked on random inputs
  against the chain itself, and the error names the nodes);
- any other chain that ends in a vector (Flatten, Linear, Affine) becomes a
  Dense synapse whose matrix is the chain's response to each unit input
  (and whose bias is its response to zero).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import nir
import numpy as np

from fer2neuro.errors import TargetError
from fer2neuro.nirgraph import ops

CONV_LIKE = (nir.Conv2d, nir.SumPool2d, nir.AvgPool2d, nir.Scale)
DENSE = (nir.Linear, nir.Affine)
LINEAR_TYPES = (*CONV_LIKE, *DENSE, nir.Flatten)
MAX_LAVA_GROUPS = 127
UNIT_CHUNK = 256          # unit inputs pushed through a chain at once (bounds memory)


@dataclass
class Synapse:
    """One Lava synapse: a convolution (NIR layout, torch correlation) or a
    dense matrix (out, in) over the flattened input, and a bias on its
    output (None or broadcastable to the output shape)."""

    kind: str                          # "conv" or "dense"
    weight: np.ndarray
    bias: np.ndarray | None
    conv: dict = field(default_factory=dict)     # stride, padding, dilation, groups ((H, W) order)
    nodes: tuple[str, ...] = ()        # the NIR nodes it stands for, in data-flow order

    @property
    def name(self) -> str:
        return "+".join(self.nodes)


def sum_pool_kernel(channels: int, kernel: tuple[int, int]) -> tuple[np.ndarray, int]:
    """A sum pool as a convolution: (weight, groups). Depthwise (groups =
    channels) when Lava can hold that many groups; Lava's Conv keeps
    ``groups`` in an int8 Var, so 128 groups wrap to -128 and the convolution
    silently outputs nothing (measured, lava-nc 0.10). Beyond 127 channels
    the pool is a full convolution whose kernel connects each channel to
    itself only: the same sums, more work."""
    if channels <= MAX_LAVA_GROUPS:
        return np.ones((channels, 1, *kernel)), channels
    weight = np.zeros((channels, channels, *kernel))
    weight[np.arange(channels), np.arange(channels)] = 1.0
    return weight, 1


def _padding(node, describe) -> tuple[int, int]:
    pad = ops.as_tuple(node.padding, 2)
    if isinstance(pad[0], str):
        raise TargetError(f"node {describe}: padding {pad[0]!r} is not supported on the Lava targets; give "
                          f"explicit padding")
    return int(pad[0]), int(pad[1])


def _single(node, name: str, describe, channels: int) -> Synapse:
    """One node as a synapse, its parameters as they are."""
    if isinstance(node, nir.SumPool2d):
        weight, groups = sum_pool_kernel(channels, ops.as_tuple(node.kernel_size, 2))
        return Synapse("conv", weight, None, dict(stride=ops.as_tuple(node.stride, 2),
                                                  padding=_padding(node, describe), dilation=(1, 1),
                                                  groups=groups), (name,))
    if isinstance(node, nir.Conv2d):
        if int(node.groups) > MAX_LAVA_GROUPS:
            raise TargetError(f"node {describe}: {int(node.groups)} groups; Lava's Conv holds groups in an int8 "
                              f"(at most {MAX_LAVA_GROUPS})")
        bias = None if node.bias is None else np.asarray(node.bias, dtype=np.float64).reshape(-1, 1, 1)
        return Synapse("conv", np.asarray(node.weight, dtype=np.float64), bias,
                       dict(stride=ops.as_tuple(node.stride, 2), padding=_padding(node, describe),
                            dilation=ops.as_tuple(node.dilation, 2), groups=int(node.groups)), (name,))
    bias = np.asarray(node.bias, dtype=np.float64) if isinstance(node, nir.Affine) else None
    return Synapse("dense", np.asarray(node.weight, dtype=np.float64), bias, {}, (name,))


# --- convolution chains ------------------------------------------------------

@dataclass
class _Conv:
    """A convolution with its groups expanded: weight (out, in, kH, kW)."""

    weight: np.ndarray
    bias: np.ndarray            # (out,)
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]


def _as_conv(node, channels: int, describe) -> _Conv:
    if isinstance(node, nir.Scale):
        factor = np.asarray(node.scale, dtype=np.float64)
        if factor.ndim == 0 or factor.size == 1:
            per_channel = np.full(channels, float(factor.reshape(-1)[0]))
        elif factor.size == channels and factor.shape in ((channels,), (channels, 1, 1)):
            per_channel = factor.reshape(-1)
        else:
            raise TargetError(f"node {describe}: a Scale inside a convolution chain must be one factor per "
                              f"channel")
        weight = np.zeros((channels, channels, 1, 1))
        weight[np.arange(channels), np.arange(channels), 0, 0] = per_channel
        return _Conv(weight, np.zeros(channels), (1, 1), (0, 0), (1, 1))
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        kernel = ops.as_tuple(node.kernel_size, 2)
        value = 1.0 if isinstance(node, nir.SumPool2d) else 1.0 / (kernel[0] * kernel[1])
        weight = np.zeros((channels, channels, *kernel))
        weight[np.arange(channels), np.arange(channels)] = value
        return _Conv(weight, np.zeros(channels), ops.as_tuple(node.stride, 2), _padding(node, describe), (1, 1))
    w = np.asarray(node.weight, dtype=np.float64)
    groups = int(node.groups)
    out, per_group = w.shape[0], w.shape[1]
    full = np.zeros((out, per_group * groups, *w.shape[2:]))
    step = out // groups
    for g in range(groups):
        full[g * step:(g + 1) * step, g * per_group:(g + 1) * per_group] = w[g * step:(g + 1) * step]
    bias = np.zeros(out) if node.bias is None else np.asarray(node.bias, dtype=np.float64).reshape(-1)
    return _Conv(full, bias, ops.as_tuple(node.stride, 2), _padding(node, describe),
                 ops.as_tuple(node.dilation, 2))


def _compose(a: _Conv, b: _Conv) -> _Conv:
    """The convolution that computes b(a(x))."""
    kh = a.stride[0] * b.dilation[0] * (b.weight.shape[2] - 1) + a.dilation[0] * (a.weight.shape[2] - 1) + 1
    kw = a.stride[1] * b.dilation[1] * (b.weight.shape[3] - 1) + a.dilation[1] * (a.weight.shape[3] - 1) + 1
    weight = np.zeros((b.weight.shape[0], a.weight.shape[1], kh, kw))
    for jy in range(b.weight.shape[2]):
        for jx in range(b.weight.shape[3]):
            outer = b.weight[:, :, jy, jx]
            for ky in range(a.weight.shape[2]):
                for kx in range(a.weight.shape[3]):
                    y = a.stride[0] * b.dilation[0] * jy + a.dilation[0] * ky
                    x = a.stride[1] * b.dilation[1] * jx + a.dilation[1] * kx
                    weight[:, :, y, x] += outer @ a.weight[:, :, ky, kx]
    bias = b.bias + b.weight.sum(axis=(2, 3)) @ a.bias
    return _Conv(weight, bias, (a.stride[0] * b.stride[0], a.stride[1] * b.stride[1]),
                 (a.stride[0] * b.padding[0] + a.padding[0], a.stride[1] * b.padding[1] + a.padding[1]), (1, 1))


def _conv_synapse(conv: _Conv, names: tuple[str, ...]) -> Synapse:
    """Back to Lava's form: depthwise where the composed kernel connects each
    channel to itself only (and Lava can hold that many groups)."""
    out, inp = conv.weight.shape[:2]
    off_diagonal = conv.weight.copy()
    if out == inp:
        off_diagonal[np.arange(out), np.arange(out)] = 0
    if out == inp and out <= MAX_LAVA_GROUPS and not off_diagonal.any():
        weight, groups = conv.weight[np.arange(out), np.arange(out)][:, None], out
    else:
        weight, groups = conv.weight, 1
    bias = conv.bias.reshape(-1, 1, 1) if conv.bias.any() else None
    return Synapse("conv", weight, bias, dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                                              groups=groups), names)


def _apply_chain(nodes, x: np.ndarray) -> np.ndarray:
    for node in nodes:
        x = ops.apply_linear(node, x)
    return x


def apply_synapse(synapse: Synapse, x: np.ndarray) -> np.ndarray:
    """The synapse on frames (N, *in_shape), as Lava computes it (float64)."""
    if synapse.kind == "conv":
        c = synapse.conv
        out = ops.conv2d(x, synapse.weight, None, c["stride"], c["padding"], c["dilation"], c["groups"])
    else:
        out = ops.affine(x.reshape(len(x), -1), synapse.weight)
    return out if synapse.bias is None else out + synapse.bias


def _check_composition(synapse: Synapse, nodes, in_shape, describe_chain: str) -> None:
    """The composed synapse must compute what the chain computes."""
    x = np.random.default_rng(0).normal(size=(2, *in_shape))
    want = _apply_chain(nodes, x)
    got = apply_synapse(synapse, x)
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-9, atol=1e-9 * (1 + np.abs(want).max())):
        raise TargetError(f"the chain {describe_chain} cannot be composed into one convolution exactly (a later "
                          f"node's zero padding stands for outputs of an earlier one that are not zero); the "
                          f"Lava targets need one synapse per neuron layer")


def compose_chain(names: list[str], nodes: list, in_shape: tuple[int, ...], describe) -> Synapse:
    """The one synapse for a chain of stateless nodes fed frames of
    ``in_shape``. ``describe(name)`` names a node in errors."""
    for name, node in zip(names, nodes):
        if not isinstance(node, LINEAR_TYPES):
            raise TargetError(f"node {describe(name)} cannot be part of a synapse on the Lava targets")
    chain = " -> ".join(describe(n) for n in names)
    ops_only = [(n, node) for n, node in zip(names, nodes) if not isinstance(node, nir.Flatten)]
    if not ops_only:
        raise TargetError(f"the chain {chain} has no synapse (Conv2d, SumPool2d, AvgPool2d, Linear, Affine)")
    flat_before = isinstance(nodes[0], nir.Flatten) and all(not isinstance(n, nir.Flatten) for n in nodes[1:])
    if len(ops_only) == 1 and not isinstance(ops_only[0][1], (nir.AvgPool2d, nir.Scale)) and \
            (len(nodes) == 1 or flat_before):
        name, node = ops_only[0]
        return _single(node, name, describe(name), in_shape[0])
    if all(isinstance(node, CONV_LIKE) for node in nodes) and len(in_shape) == 3:
        channels, conv = in_shape[0], None
        for name, node in zip(names, nodes):
            step = _as_conv(node, channels, describe(name))
            channels = step.weight.shape[0]
            conv = step if conv is None else _compose(conv, step)
        synapse = _conv_synapse(conv, tuple(n for n, _ in ops_only))
        _check_composition(synapse, nodes, in_shape, chain)
        return synapse
    out_shape = _apply_chain(nodes, np.zeros((1, *in_shape))).shape[1:]
    if len(out_shape) != 1:
        raise TargetError(f"the chain {chain} ends in shape {out_shape}: it is neither one convolution nor a "
                          f"dense map onto a vector, which the Lava targets need")
    return Synapse("dense", _unit_responses(nodes, in_shape), _bias_of(nodes, in_shape), {},
                   tuple(n for n, _ in ops_only))


def _without_bias(node):
    if isinstance(node, (nir.Affine, nir.Conv2d)) and node.bias is not None:
        return dataclasses.replace(node, bias=np.zeros_like(np.asarray(node.bias, dtype=np.float64)))
    return node


def _unit_responses(nodes, in_shape) -> np.ndarray:
    """The chain's matrix (out, in): its bias-free response to each unit input."""
    linear = [_without_bias(n) for n in nodes]
    size = int(np.prod(in_shape))
    columns = []
    for start in range(0, size, UNIT_CHUNK):
        count = min(UNIT_CHUNK, size - start)
        units = np.zeros((count, size))
        units[np.arange(count), start + np.arange(count)] = 1.0
        columns.append(_apply_chain(linear, units.reshape(count, *in_shape)).reshape(count, -1))
    return np.concatenate(columns).T.copy()


def _bias_of(nodes, in_shape) -> np.ndarray | None:
    bias = _apply_chain(nodes, np.zeros((1, *in_shape)))[0]
    return bias if bias.any() else None
