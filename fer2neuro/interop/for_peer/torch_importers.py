"""What ``--for snntorch`` and ``--for norse`` share: both peers' importers
build torch modules through nirtorch (for_peer/snntorch.py and
for_peer/norse.py say what each makes of a node), so Flatten, SumPool2d and
Conv2d are written for torch the same way, and the rewrite of a graph
differs only in its neurons."""
from __future__ import annotations

import nir
import numpy as np

from fer2neuro.errors import GraphError
from fer2neuro.nirgraph.dialects.numeric import f64
from fer2neuro.nirgraph.file import GraphInfo

# the node types both importers map, and the rewrite below handles
NODES = (nir.Input, nir.Output, nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten, nir.SumPool2d, nir.IF, nir.LIF)


def check_reset(name: str, node, peer: str) -> None:
    if not np.all(f64(node.v_reset) == 0):
        raise GraphError(f"node {name!r} ({type(node).__name__}): {peer}'s importer resets to 0 and ignores "
                         f"v_reset; this node resets to {np.unique(f64(node.v_reset))[:3].tolist()}")


def torch_flatten(name: str, node: nir.Flatten, peer: str) -> nir.Flatten:
    """NIR's Flatten dims (counted without the batch) written as negative
    dims, which torch.nn.Flatten (counting the batch) and NIR read alike."""
    shapes = [np.asarray(s).reshape(-1) for s in (node.input_type or {}).values() if s is not None]
    if len(shapes) != 1 or shapes[0].size == 0 or shapes[0].dtype.kind not in "iu":
        raise GraphError(f"node {name!r} (Flatten): its input shape is unknown, so its dims cannot be written "
                         f"in a form {peer}'s importer (torch.nn.Flatten, which counts the batch) reads as NIR's")
    ndim = int(shapes[0].size)
    negative = lambda d: int(d) - ndim if int(d) >= 0 else int(d)   # noqa: E731
    return nir.Flatten(input_type=node.input_type, start_dim=negative(np.asarray(node.start_dim).item()),
                       end_dim=negative(np.asarray(node.end_dim).item()), metadata=dict(node.metadata or {}))


def _pair(value) -> np.ndarray:
    a = np.asarray(value).reshape(-1)
    return np.array([int(a[0])] * 2 if a.size == 1 else [int(v) for v in a])


def lp_pool_exact(node: nir.SumPool2d) -> bool:
    """Whether torch.nn.LPPool2d(norm_type=1) computes this SumPool2d exactly
    on spike counts: no padding (it has none), a power-of-2 window area (it
    takes the mean, then multiplies by the area)."""
    area = int(np.prod(_pair(node.kernel_size)))
    return not np.any(_pair(node.padding)) and area & (area - 1) == 0


def sum_pool_as_conv(name: str, node: nir.SumPool2d, shape: tuple[int, int, int] | None, peer: str) -> nir.Conv2d:
    """A SumPool2d of input ``shape`` (C, H, W) as a Conv2d with weight[c, c] =
    1 (exact: every product is 0 or the input, every sum adds zeros)."""
    if shape is None:
        raise GraphError(f"node {name!r} (SumPool2d): {peer} cannot pool with padding or a window area that is "
                         f"not a power of 2, and its channel count is unknown, so it cannot be written as a Conv2d")
    channels, height, width = shape
    kh, kw = _pair(node.kernel_size)
    weight = np.zeros((channels, channels, kh, kw))
    weight[np.arange(channels), np.arange(channels)] = 1.0
    # input_shape is written: NIR's file writer cannot store None (h5py refuses it)
    return nir.Conv2d(input_shape=(height, width), weight=weight, stride=_pair(node.stride), padding=_pair(node.padding),
                      dilation=np.array([1, 1]), groups=1, bias=np.zeros(channels),
                      metadata={**dict(node.metadata or {}), "lowered_from": "SumPool2d"})


def pool_input_shape(graph, name: str) -> tuple[int, int, int] | None:
    """The (C, H, W) a SumPool2d receives: its own input_type, or worked back
    from the output shape of the neuron after it (fer2neuro's pools feed an
    IF): H = (H' - 1) * stride + kernel - 2 * padding."""
    node = graph.nodes[name]
    shapes = [np.asarray(s).reshape(-1) for s in (node.input_type or {}).values() if s is not None]
    if len(shapes) == 1 and shapes[0].size == 3:
        return tuple(int(v) for v in shapes[0])
    for src, dst in graph.edges:
        if src == name and hasattr(graph.nodes[dst], "v_threshold") and np.ndim(graph.nodes[dst].v_threshold) == 3:
            channels, *out = np.shape(graph.nodes[dst].v_threshold)
            kernel, stride, padding = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
            return (int(channels), *((o - 1) * s + k - 2 * p for o, s, k, p in zip(out, stride, kernel, padding)))
    return None


def _conv_with_bias(node: nir.Conv2d) -> nir.Conv2d:
    """The same Conv2d with a zero bias (the importers require one)."""
    return nir.Conv2d(input_shape=node.input_shape, weight=node.weight, stride=node.stride,
                      padding=node.padding, dilation=node.dilation, groups=node.groups,
                      bias=np.zeros(np.shape(node.weight)[0]), metadata=dict(node.metadata or {}))


def rewrite_for_torch(graph: nir.NIRGraph, peer: str, key: str, peer_dt: float, rewrites: dict,
                      unmapped: str = "") -> nir.NIRGraph:
    """``graph`` as a torch importer must read it: each node of a type in
    ``rewrites`` by ``rewrites[type](name, node, dt)`` (dt: the graph's, else
    1), a Flatten with negative dims, a SumPool2d that LPPool2d cannot
    compute exactly as a Conv2d, a Conv2d without bias with a zero one; a
    GraphError naming a node of any other type than NODES (``unmapped``: what
    the importer would do with it). The metadata gets ``dt = peer_dt`` and
    ``fer2neuro_for = key``."""
    dt = GraphInfo.of(graph).dt or 1.0
    nodes = {}
    for name, node in graph.nodes.items():
        if not isinstance(node, NODES):
            raise GraphError(f"node {name!r} ({type(node).__name__}): {peer}'s importer has no mapping for it"
                             f"{unmapped}")
        rewrite = next((f for kind, f in rewrites.items() if isinstance(node, kind)), None)
        if rewrite is not None:
            node = rewrite(name, node, dt)
        elif isinstance(node, nir.Flatten):
            node = torch_flatten(name, node, peer)
        elif isinstance(node, nir.SumPool2d) and not lp_pool_exact(node):
            node = sum_pool_as_conv(name, node, pool_input_shape(graph, name), peer)
        elif isinstance(node, nir.Conv2d) and node.bias is None:
            node = _conv_with_bias(node)
        nodes[name] = node
    meta = {**dict(graph.metadata or {}), "dt": peer_dt, "fer2neuro_for": key}
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=meta, type_check=False)
