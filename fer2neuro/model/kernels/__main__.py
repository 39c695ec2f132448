"""``python -m fer2neuro.model.kernels``: build the fused-neuron kernel ahead
of time (``make setup`` does), so the first training run does not wait for
the compiler. Never fails: without a kernel, training uses torch ops."""
import sys

from fer2neuro.model.kernels import build

try:
    print(f"fused neuron kernel: {build(verbose=True)}")
except (OSError, RuntimeError) as exc:      # no compiler, or an unwritable cache
    print(f"fused neuron kernel not built ({exc}); the fused engine will use torch ops", file=sys.stderr)
