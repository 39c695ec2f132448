"""Lava targets: the graph as lava-nc processes, simulated on the CPU with
``Loihi2SimCfg``. ``lava`` runs the float models (``floating_pt``) built
from the NIR graph; ``lava-fixed`` runs the quantised lava-dl netx network
(``network.net``) in Lava's bit-accurate ``fixed_pt`` models."""
from fer2neuro.targets.lava.target import LavaFixedTarget, LavaTarget

__all__ = ["LavaTarget", "LavaFixedTarget"]
