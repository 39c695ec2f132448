"""What every command shares: one-line errors, JSON output, common options."""
from __future__ import annotations

import json
import math

import click

from fer2neuro.errors import Fer2NeuroError


class Fer2NeuroGroup(click.Group):
    """Turns user errors into ``Error: <one line>`` on stderr and exit 1.
    Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Fer2NeuroError as exc:
            message = " ".join(str(exc).split())  # one line, whatever the source
            raise click.ClickException(message) from None
        except OSError as exc:
            if exc.filename is None:
                raise
            raise click.ClickException(f"{exc.filename}: {exc.strerror}") from None


def _clean(obj):
    """JSON has no NaN/Infinity: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def to_json(obj: dict, indent: int | None = None) -> str:
    return json.dumps(_clean(obj), allow_nan=False, indent=indent)


def emit_json(obj: dict) -> None:
    """Exactly one JSON object on stdout."""
    click.echo(to_json(obj))


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON object on stdout instead of a table.")
device_option = click.option("--device", default="auto", show_default=True,
                             help="auto (CUDA when available), cpu, or cuda[:N].")
data_option = click.option("--data", default="synthetic", show_default=True, metavar="synthetic|PATH",
                           help="'synthetic' (built-in), a FER2013 CSV (.csv/.csv.gz) or an image "
                                "folder with train/<class>/ and test/<class>/.")
ferplus_option = click.option("--ferplus", type=click.Path(dir_okay=False), default=None,
                              help="FER+ vote file (fer2013new.csv): relabel the FER2013 CSV "
                                   "with 8 majority-vote classes.")
