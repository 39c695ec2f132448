"""Option types and options that several commands share: finite numbers,
the time step, seeds, step and sample counts within their bounds
(fer2neuro/memory.py), the data split, figure formats (checked when the
command line is parsed, before any work starts)."""
from __future__ import annotations

import math
from pathlib import Path

import click

from fer2neuro.data.dataset import SPLITS
from fer2neuro.memory import MAX_SAMPLES, MAX_SEED, MAX_TIMESTEPS
from fer2neuro.model.config import MAX_TIMESTEPS as MAX_MODEL_TIMESTEPS

DEFAULT_PRESET = "small"    # train's and summary's --preset default
DT_MAX = 1e6          # --dt's upper bound: far beyond any time constant a graph holds


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange that also refuses NaN and ±inf (which a plain
    FloatRange lets through: NaN compares false with every bound)."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if isinstance(rv, float) and not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


class FiniteFloat(FiniteFloatRange):
    """Any finite float."""

    name = "finite float"

    def __init__(self) -> None:
        super().__init__()


DT = FiniteFloatRange(min=0, max=DT_MAX, min_open=True)
DT_RANGE = f"0 < dt <= {DT_MAX:g}"

# Every --seed: one range for numpy and torch alike (memory.py says why).
SEED = click.IntRange(0, MAX_SEED)
SEED_RANGE = f"0 to {MAX_SEED} (2^32 - 1)"
# Every --timesteps/-T and --samples: a hard bound, then the memory estimate.
# A NIR graph's steps (any tool's graph) and fer2neuro's network's (its config's bound).
TIMESTEPS = click.IntRange(1, MAX_TIMESTEPS)
MODEL_TIMESTEPS = click.IntRange(1, MAX_MODEL_TIMESTEPS)
SAMPLES = click.IntRange(1, MAX_SAMPLES)

SPLIT_HELP = f"{', '.join(SPLITS)} (aliases: train, test, val, private)."


def split_option(*names, **kwargs):
    """--split, its choices listed in the help (checked by the data loader,
    which also takes the aliases)."""
    kwargs.setdefault("default", "PublicTest")
    kwargs.setdefault("show_default", True)
    kwargs.setdefault("help", SPLIT_HELP)
    return click.option(*(names or ("--split",)), **kwargs)


def figure_suffix(ctx, param, value):
    """A click callback: ``value`` must end in a format matplotlib writes."""
    if value is None:
        return value
    suffix = Path(value).suffix.lower().lstrip(".")
    supported = figure_formats()
    if suffix not in supported:
        raise click.BadParameter(f"{value}: unsupported figure format {('.' + suffix) if suffix else '(none)'}; "
                                 f"use one of {', '.join('.' + s for s in supported)}", ctx, param)
    return value


def figure_formats() -> list[str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return sorted(FigureCanvasAgg(Figure()).get_supported_filetypes())
