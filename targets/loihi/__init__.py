"""The ``loihi`` target: Lava's bit-accurate fixed-point arithmetic
(arithmetic.py), batched over samples (simulator.py), on the netx network of
an exported Lava folder (network.py)."""
from fer2neuro.targets.loihi.simulator import LoihiTarget

__all__ = ["LoihiTarget"]
