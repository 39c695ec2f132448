"""A trained ConvSNN as a NIR graph (SPEC §4): BatchNorm folded into the
convolutions, max pooling lowered to a sum pool feeding an IF neuron.

Built from ``nir`` node classes directly, not with snnTorch's
``export_to_nir``: that exporter has no MaxPool2d or BatchNorm2d, never
exports the reset mechanism (every Leaky becomes a LIF with v_reset = 0
whatever it was), turns an IF (beta = 1) into a LIF with infinite tau, and
fails type checking for a Leaky with a scalar beta. See docs/deployment.md.

Node names: every spiking node carries the name of the model layer whose
spikes it emits (``SPIKING_LAYERS``), so the verification compares layers by
name. The lowered pools are ``pool1_sum`` -> ``pool1`` (the IF).

Numerics: the folded conv weights are computed in float64 and stored in
float64; arrays whose values float32 holds exactly (the trained linear
weights, thresholds, tau) are stored in float32, which halves the file size of
the paper preset without changing a bit of what a float64 target computes.
"""
from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from fer2neuro.errors import CheckpointError, GraphError
from fer2neuro.nirgraph.file import GraphInfo, is_hdf5, read_graph, write_graph
from fer2neuro.model.checkpoint import load_model
from fer2neuro.model.network import ConvSNN

MAXPOOL_THRESHOLD = 0.5   # a sum of binary spikes > 0.5 iff at least one input spiked


def compact(array) -> np.ndarray:
    """float32 if that holds every value exactly, else float64."""
    a = np.asarray(array, dtype=np.float64)
    narrow = a.astype(np.float32)
    return narrow if np.array_equal(narrow.astype(np.float64), a) else a


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of one convolution computing conv followed by BN in eval
    mode, in float64: w' = w * gamma / sqrt(var + eps), b' = beta - mean *
    gamma / sqrt(var + eps) (+ the conv bias through the same affine map)."""
    w = conv.weight.detach().double().cpu()
    mean = bn.running_mean.detach().double().cpu()
    var = bn.running_var.detach().double().cpu()
    gamma = bn.weight.detach().double().cpu() if bn.affine else torch.ones_like(mean)
    beta = bn.bias.detach().double().cpu() if bn.affine else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.detach().double().cpu() if conv.bias is not None else torch.zeros_like(mean)
    weight = w * scale.view(-1, 1, 1, 1)
    return weight.numpy(), (beta + (bias - mean) * scale).numpy()


def _full(shape, value) -> np.ndarray:
    return compact(np.full(tuple(int(s) for s in shape), value, dtype=np.float64))


def if_node(shape, v_threshold: float, **metadata) -> nir.IF:
    """SPEC §2 IF: v += I (r = 1, dt = 1), hard reset to 0."""
    return nir.IF(r=_full(shape, 1.0), v_threshold=_full(shape, v_threshold),
                  v_reset=_full(shape, 0.0), metadata=metadata)


def lif_node(shape, tau: float, v_threshold: float) -> nir.LIF:
    """SPEC §2 LIF: v += (I - v) / tau with dt = 1, so r = 1 and v_leak = 0."""
    return nir.LIF(tau=_full(shape, tau), r=_full(shape, 1.0), v_leak=_full(shape, 0.0),
                   v_threshold=_full(shape, v_threshold), v_reset=_full(shape, 0.0))


def conv_node(conv: nn.Conv2d, bn: nn.BatchNorm2d, input_hw: tuple[int, int]) -> nir.Conv2d:
    weight, bias = fold_batchnorm(conv, bn)
    return nir.Conv2d(input_shape=tuple(input_hw), weight=compact(weight), bias=compact(bias),
                      stride=tuple(conv.stride), padding=tuple(conv.padding),
                      dilation=tuple(conv.dilation), groups=conv.groups,
                      metadata={"batchnorm_folded": "yes"})


def sum_pool_node(pool: nn.MaxPool2d) -> nir.SumPool2d:
    pair = lambda v: np.array(v if isinstance(v, tuple) else (v, v))  # noqa: E731
    if pool.dilation not in (1, (1, 1)) or pool.ceil_mode:
        raise CheckpointError("only MaxPool2d without dilation or ceil_mode lowers to SumPool2d + IF")
    return nir.SumPool2d(kernel_size=pair(pool.kernel_size), stride=pair(pool.stride or pool.kernel_size),
                         padding=pair(pool.padding), metadata={"lowered_from": "MaxPool2d"})


def linear_node(fc: nn.Linear) -> nir.NIRNode:
    weight = compact(fc.weight.detach().double().cpu().numpy())
    if fc.bias is None:
        return nir.Linear(weight=weight)
    return nir.Affine(weight=weight, bias=compact(fc.bias.detach().double().cpu().numpy()))


def model_to_nir(model: ConvSNN, *, encoder: str | None = None, timesteps: int | None = None) -> nir.NIRGraph:
    """The NIR graph of ``model`` (in eval semantics: BN running statistics,
    no dropout). ``encoder``/``timesteps`` override the model's for the
    metadata only: the graph is the same; with ``direct`` its input is the
    analog image held constant over T, with ``poisson`` the spike train."""
    if not isinstance(model, ConvSNN):
        raise CheckpointError(f"cannot export a {type(model).__name__} to NIR: only the spiking ConvSNN")
    cfg = model.config
    size, c = cfg.image_size, cfg.channels
    half, quarter = size // 2, size // 4
    h1, h2 = cfg.hidden
    nodes = {
        "input": nir.Input(input_type={"input": np.array([1, size, size])}),
        "conv1": conv_node(model.conv1, model.bn1, (size, size)),
        "if1": if_node((c, size, size), model.if1.v_threshold),
        "pool1_sum": sum_pool_node(model.pool1),
        "pool1": if_node((c, half, half), MAXPOOL_THRESHOLD, lowered_from="MaxPool2d"),
        "conv2": conv_node(model.conv2, model.bn2, (half, half)),
        "if2": if_node((c, half, half), model.if2.v_threshold),
        "pool2_sum": sum_pool_node(model.pool2),
        "pool2": if_node((c, quarter, quarter), MAXPOOL_THRESHOLD, lowered_from="MaxPool2d"),
        "flatten": nir.Flatten(input_type={"input": np.array([c, quarter, quarter])}, start_dim=0, end_dim=-1),
        "fc1": linear_node(model.fc1),
        "lif1": lif_node((h1,), model.lif1.tau, model.lif1.v_threshold),
        "fc2": linear_node(model.fc2),
        "lif2": lif_node((h2,), model.lif2.tau, model.lif2.v_threshold),
        "fc3": linear_node(model.fc3),
        "lif_out": lif_node((cfg.num_classes,), model.lif_out.tau, model.lif_out.v_threshold),
        "output": nir.Output(output_type={"output": np.array([cfg.num_classes])}),
    }
    order = list(nodes)
    edges = list(zip(order[:-1], order[1:]))
    info = GraphInfo(dt=1.0, timesteps=timesteps or cfg.timesteps, encoder=encoder or cfg.encoder,
                     class_names=tuple(cfg.class_names), preset=cfg.preset, fer2neuro=True)
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=info.to_metadata(), type_check=True)
    except ValueError as exc:  # a shape that does not chain: a bug, but say where
        raise CheckpointError(f"the exported NIR graph does not type-check: {exc}") from None


def export_checkpoint(checkpoint, out, *, encoder: str | None = None, timesteps: int | None = None) -> dict:
    """``fer2neuro export CKPT --target nir``: write the graph to ``out``."""
    model, _ = load_model(checkpoint, "cpu")
    graph = model_to_nir(model, encoder=encoder, timesteps=timesteps)
    write_graph(graph, out)
    info = GraphInfo.of(graph)
    return {"target": "nir", "path": str(out), "bytes": Path(out).stat().st_size,
            "nodes": {name: type(node).__name__ for name, node in graph.nodes.items()},
            "edges": len(graph.edges), "dt": info.dt, "timesteps": info.timesteps,
            "encoder": info.encoder, "class_names": list(info.class_names),
            "summary": f"NIR graph of {len(graph.nodes)} nodes, {len(graph.edges)} edges; dt={info.dt}, "
                       f"T={info.timesteps}, {info.encoder} encoding"}


def graph_from_path(path) -> nir.NIRGraph:
    """A ``.nir`` file as it is, or a checkpoint exported on the fly."""
    if not Path(path).is_file():
        raise GraphError(f"{path}: no such file (expected a .nir graph or a fer2neuro checkpoint)")
    if is_hdf5(path):
        return read_graph(path)
    model, _ = load_model(path, "cpu")
    return model_to_nir(model)
