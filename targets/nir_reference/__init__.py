"""The NIR reference target: float64 numpy, forward Euler (see equations.py)."""
from fer2neuro.targets.nir_reference.simulator import NIRReferenceTarget, supported_node_names

__all__ = ["NIRReferenceTarget", "supported_node_names"]
