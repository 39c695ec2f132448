"""Stateless NIR operators in float64 numpy, applied to a batch of frames.

Every function takes ``x`` shaped ``(N, *node_input_shape)``, where N is
samples x time steps folded together: these nodes have no memory, so all
steps of all samples go through one call.

Convolutions gather the kernel windows of a chunk of frames into columns
(im2col, channels last) and do one matrix product per chunk: 5x faster than a
product per kernel offset on 2 cores, with the column buffer bounded.
"""
from __future__ import annotations

import nir
import numpy as np

COLUMN_BYTES = 64 * 2**20


def as_tuple(value, n: int, name: str = "value") -> tuple:
    """NIR stores stride/padding/... as an int, a tuple, a numpy array or (in
    files) a 0-d array; padding may also be 'same'/'valid' (bytes in files)."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.ndarray):
        value = value.item() if value.shape == () else value.tolist()
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        return (value,) * n
    if isinstance(value, (int, np.integer, float)):
        return (int(value),) * n
    value = tuple(int(v) for v in value)
    if len(value) == 1:
        return value * n
    if len(value) != n:
        raise ValueError(f"{name} {value} does not have {n} entries")
    return value


def padding_pairs(padding, kernel, dilation, n: int) -> list[tuple[int, int]]:
    """(before, after) per spatial dim; 'same' pads like PyTorch (the odd
    extra on the after side)."""
    pad = as_tuple(padding, n, "padding")
    if pad[0] == "valid":
        return [(0, 0)] * n
    if pad[0] == "same":
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return [(t // 2, t - t // 2) for t in total]
    return [(p, p) for p in pad]


def _window_slices(offset: int, stride: int, count: int) -> slice:
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def conv2d(x, weight, bias, stride, padding, dilation, groups) -> np.ndarray:
    """PyTorch's Conv2d (cross-correlation): x (N, C_in, H, W), weight
    (C_out, C_in / groups, kH, kW), bias (C_out,) -> (N, C_out, H', W')."""
    weight = np.asarray(weight, dtype=np.float64)
    c_out, c_group, kh, kw = weight.shape
    groups = int(groups)
    stride = as_tuple(stride, 2, "stride")
    dilation = as_tuple(dilation, 2, "dilation")
    (pt, pb), (pl, pr) = padding_pairs(padding, (kh, kw), dilation, 2)
    n, c_in, h, w = x.shape
    if c_in != c_group * groups or c_out % groups:
        raise ValueError(f"weight {weight.shape} with groups={groups} does not fit {c_in} input channels")
    ho = (h + pt + pb - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + pl + pr - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"kernel {kh}x{kw} does not fit a {h}x{w} input")
    x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr))).transpose(0, 2, 3, 1)   # channels last
    windows = [(_window_slices(i * dilation[0], stride[0], ho), _window_slices(j * dilation[1], stride[1], wo))
               for i in range(kh) for j in range(kw)]
    # im2col in chunks of frames: one large matrix product per chunk, with the
    # column buffer kept near COLUMN_BYTES.
    chunk = max(1, COLUMN_BYTES // (ho * wo * kh * kw * c_group * 8))
    per_group = c_out // groups
    out = np.empty((n, ho, wo, c_out))
    for g in range(groups):
        xg = x[..., g * c_group:(g + 1) * c_group]
        wg = weight[g * per_group:(g + 1) * per_group].transpose(2, 3, 1, 0).reshape(-1, per_group)
        for s in range(0, n, chunk):
            frames = xg[s:s + chunk]
            cols = np.concatenate([frames[:, rows, cols_, :] for rows, cols_ in windows], axis=-1)
            out[s:s + chunk, ..., g * per_group:(g + 1) * per_group] = \
                (cols.reshape(-1, cols.shape[-1]) @ wg).reshape(len(frames), ho, wo, per_group)
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def conv1d(x, weight, bias, stride, padding, dilation, groups) -> np.ndarray:
    """PyTorch's Conv1d: x (N, C_in, L), weight (C_out, C_in / groups, k)."""
    pad = as_tuple(padding, 1, "padding")[0]
    return conv2d(x[:, :, None, :], np.asarray(weight)[:, :, None, :], bias,
                  (1, as_tuple(stride, 1)[0]), pad if isinstance(pad, str) else (0, pad),
                  (1, as_tuple(dilation, 1)[0]), groups)[:, :, 0, :]


def sum_pool2d(x, kernel_size, stride, padding) -> np.ndarray:
    """Sum over each window (zero padding): x (N, C, H, W)."""
    kh, kw = as_tuple(kernel_size, 2, "kernel_size")
    sh, sw = as_tuple(stride, 2, "stride")
    ph, pw = as_tuple(padding, 2, "padding")
    n, c, h, w = x.shape
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.zeros((n, c, ho, wo))
    for i in range(kh):
        for j in range(kw):
            out += x[:, :, _window_slices(i, sh, ho), _window_slices(j, sw, wo)]
    return out


def avg_pool2d(x, kernel_size, stride, padding) -> np.ndarray:
    """Mean over each window, padding counted (PyTorch's default
    ``count_include_pad=True``)."""
    kh, kw = as_tuple(kernel_size, 2, "kernel_size")
    return sum_pool2d(x, kernel_size, stride, padding) / (kh * kw)


def flatten(x, start_dim: int, end_dim: int) -> np.ndarray:
    """NIR's Flatten: dims count within one sample (no batch dim), so
    ``start_dim=0`` flattens (C, H, W) to (C*H*W,)."""
    shape = x.shape[1:]
    nd = len(shape)
    start = int(start_dim) % nd if nd else 0
    end = int(end_dim) % nd if nd else 0
    new = shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:]
    return x.reshape(x.shape[0], *new)


def affine(x, weight, bias=None) -> np.ndarray:
    """y = W x + b for x (N, in), W (out, in)."""
    y = x @ np.asarray(weight, dtype=np.float64).T
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64)
    return y


def scale(x, factor) -> np.ndarray:
    return x * np.asarray(factor, dtype=np.float64)


# Stateless linear nodes, frames (N, *in_shape) -> (N, *out_shape): what the
# nir target runs them with, and what the Lava lowering composes linear
# chains from (lowering/synapse_chain.py).
LINEAR_NODES = {
    nir.Affine: lambda n, x: affine(x, n.weight, n.bias),
    nir.Linear: lambda n, x: affine(x, n.weight),
    nir.Scale: lambda n, x: scale(x, n.scale),
    nir.Conv1d: lambda n, x: conv1d(x, n.weight, n.bias, n.stride, n.padding, n.dilation, n.groups),
    nir.Conv2d: lambda n, x: conv2d(x, n.weight, n.bias, n.stride, n.padding, n.dilation, n.groups),
    nir.SumPool2d: lambda n, x: sum_pool2d(x, n.kernel_size, n.stride, n.padding),
    nir.AvgPool2d: lambda n, x: avg_pool2d(x, n.kernel_size, n.stride, n.padding),
    nir.Flatten: lambda n, x: flatten(x, n.start_dim, n.end_dim),
}


def apply_linear(node, x: np.ndarray) -> np.ndarray:
    """One stateless linear node on frames (N, *in_shape)."""
    return LINEAR_NODES[type(node)](node, x)
