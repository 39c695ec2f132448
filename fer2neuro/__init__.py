"""fer2neuro: a convolutional spiking network for facial expression recognition,
trained in snnTorch and deployed through NIR to Lava/Loihi-style targets."""

import sys

if sys.argv[:1] == ["-m"]:          # `python -m fer2neuro` is starting (runpy imports us before __main__)
    from fer2neuro.launch import exit_on_interrupt

    exit_on_interrupt()

from fer2neuro.lava_compat import install as _install_lava_compat  # noqa: E402

__version__ = "0.1.0"

# Lets lava-nc 0.10 / lava-dl 0.6 import on Python 3.11 (see lava_compat);
# cheap: nothing from lava is imported here.
_install_lava_compat()
