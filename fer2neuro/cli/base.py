"""What every command shares: one-line errors, JSON output, common options."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import click

from fer2neuro.errors import ConfigError, Fer2NeuroError

INTERRUPTED = 130                       # exit status after Ctrl-C, as shells report 128 + SIGINT


class _LineTracker:
    """sys.stderr while a command runs: remembers whether the cursor is at
    the start of a line, so that an error never ends up glued to the text of
    a progress bar (tqdm writes to sys.stderr, ending a closed bar with a
    bare carriage return)."""

    def __init__(self, stream):
        self._stream = stream
        self.at_line_start = True

    def write(self, text):
        if text:
            last = text[-1]
            # "\r" leaves the cursor at the start of a line on a terminal; in a
            # file the bar's text stays on that line.
            self.at_line_start = last == "\n" or (last == "\r" and self._isatty())
        return self._stream.write(text)

    def _isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (AttributeError, ValueError, OSError):
            return False

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _end_partial_line() -> None:
    """Start a new line on stderr if something (a progress bar) left the
    cursor in the middle of one, and keep open bars from drawing after it."""
    tqdm_module = sys.modules.get("tqdm.std")
    if tqdm_module is not None:
        for bar in list(getattr(tqdm_module.tqdm, "_instances", ())):
            bar.disable = True          # a bar closed after the error would redraw over it
    stream = sys.stderr
    if isinstance(stream, _LineTracker) and not stream.at_line_start:
        stream.write("\n")
        stream.flush()


class Fer2NeuroGroup(click.Group):
    """Turns user errors into ``Error: <one line>`` on stderr and exit 1,
    Ctrl-C into ``Error: interrupted`` and exit 130. Anything else is a bug
    and keeps its traceback. Each error starts on its own line."""

    def invoke(self, ctx: click.Context):
        tracker = sys.stderr = _LineTracker(sys.stderr)
        try:
            return super().invoke(ctx)
        except Fer2NeuroError as exc:
            _end_partial_line()
            message = " ".join(str(exc).split())  # one line, whatever the source
            raise click.ClickException(message) from None
        except OSError as exc:
            if exc.filename is None:
                raise
            _end_partial_line()
            raise click.ClickException(f"{exc.filename}: {exc.strerror}") from None
        except KeyboardInterrupt:
            _end_partial_line()
            click.echo("Error: interrupted", err=True)
            ctx.exit(INTERRUPTED)
        except click.ClickException:
            _end_partial_line()
            raise
        finally:
            if sys.stderr is tracker:
                sys.stderr = tracker._stream


def _check_parents(path: str, option: str) -> None:
    """Every existing folder above ``path`` must be a folder."""
    parent = Path(path).parent
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"{option} {path}: {folder} is not a folder")
            return


def output_file(path, option: str = "--out"):
    """Check a file to write (``None`` = not asked for): not empty, not a
    folder, not ending in '/'. Returns ``path`` unchanged; raises a
    ConfigError naming the user's path."""
    if path is None:
        return None
    text = os.fspath(path)
    if text == "":
        raise ConfigError(f"{option}: empty path; name the file to write")
    if Path(text).is_dir():
        raise ConfigError(f"{option} {text}: is a folder; name the file to write (e.g. {text.rstrip('/')}/NAME)")
    if text.endswith(("/", os.sep)):
        raise ConfigError(f"{option} {text}: ends in '/', which names a folder; name the file to write")
    _check_parents(text, option)
    return path


def output_dir(path, option: str = "--out"):
    """Check a folder to write into (``None`` = not asked for): not empty,
    not an existing file. Returns ``path`` unchanged; raises a ConfigError
    naming the user's path."""
    if path is None:
        return None
    text = os.fspath(path)
    if text == "":
        raise ConfigError(f"{option}: empty path; name the folder to write into")
    if Path(text).exists() and not Path(text).is_dir():
        raise ConfigError(f"{option} {text}: is a file, not a folder; choose another {option}")
    _check_parents(text, option)
    return path


class OutputFile(click.ParamType):
    """``type=OutputFile()`` for an option naming a file to write: see
    :func:`output_file` (errors are one-line ``Error: ...``, exit 1)."""

    name = "file"

    def convert(self, value, param, ctx):
        return output_file(value, _option_name(param))


class OutputDir(click.ParamType):
    """``type=OutputDir()`` for an option naming a folder to write into: see
    :func:`output_dir`."""

    name = "folder"

    def convert(self, value, param, ctx):
        return output_dir(value, _option_name(param))


def _option_name(param) -> str:
    if param is None or not getattr(param, "opts", None):
        return "--out"
    return max(param.opts, key=len) if param.param_type_name == "option" else param.human_readable_name


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
