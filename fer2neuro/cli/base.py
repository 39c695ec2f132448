"""What every command shares: one-line errors, JSON output, common options."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import click

from fer2neuro.disk_errors import DISK_ERRNOS, disk_error
from fer2neuro.atomic import check_name_length, check_target, check_writable, reading
from fer2neuro.errors import ConfigError, Fer2NeuroError, one_line

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


class Fer2NeuroCommand(click.Command):
    """Every fer2neuro command. Before it runs, what it reads (each argument
    and option naming an existing file or folder, outputs aside) is
    registered with fer2neuro/atomic.py, whose writers then refuse to
    replace any of it, and each output file is checked against it now,
    before the work: ``export x.pt --out x.pt`` is one line of error."""

    def invoke(self, ctx: click.Context):
        with reading(_inputs(self, ctx)):
            for param in self.params:
                value = ctx.params.get(param.name)
                if isinstance(param.type, OutputFile) and value is not None:
                    option = _option_name(param)
                    check_target(value, f"{option} {value}", f"choose another {option}")
            return super().invoke(ctx)


def _inputs(command: click.Command, ctx: click.Context) -> list[tuple[str, str]]:
    """(how to name it, path) for each existing file or folder among the
    command's parameters that are not outputs; an exported Lava folder's
    files with it (``verify --lava L --report L/manifest.json`` would
    replace one)."""
    found = []
    for param in command.params:
        if isinstance(param.type, (OutputFile, OutputDir, OutputPath, click.Choice)):
            continue
        value = ctx.params.get(param.name)
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if not isinstance(item, (str, os.PathLike)) or os.fspath(item) == "" or not os.path.exists(item):
                continue
            label = f"{_option_name(param)} {os.fspath(item)}"
            found.append((label, item))
            if os.path.isdir(item):
                from fer2neuro.lowering.lava_folder import GRAPH_FILE, MANIFEST_FILE, NETWORK_FILE

                found += [(f"{label}/{name}", os.path.join(item, name))
                          for name in (NETWORK_FILE, GRAPH_FILE, MANIFEST_FILE)]
    return found


class Fer2NeuroGroup(click.Group):
    """Turns user errors into ``Error: <one line>`` on stderr and exit 1,
    Ctrl-C into ``Error: interrupted`` and exit 130. Anything else is a bug
    and keeps its traceback. Each error starts on its own line."""

    command_class = Fer2NeuroCommand

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not isinstance(cmd, Fer2NeuroCommand):       # it would skip the input/output checks
            raise TypeError(f"{cmd.name}: a fer2neuro command is @click.command(cls=Fer2NeuroCommand)")
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context):
        tracker = sys.stderr = _LineTracker(sys.stderr)
        try:
            return super().invoke(ctx)
        except Fer2NeuroError as exc:
            _end_partial_line()
            message = one_line(exc)  # one line, whatever the source
            raise click.ClickException(message) from None
        except OSError as exc:
            full = disk_error(exc)
            if exc.filename is None and full is None:
                raise
            _end_partial_line()
            raise click.ClickException(_os_message(exc if exc.filename is not None else full)) from None
        except KeyboardInterrupt:
            _end_partial_line()
            click.echo("Error: interrupted", err=True)
            ctx.exit(INTERRUPTED)
        except click.ClickException:
            _end_partial_line()
            raise
        except MemoryError:
            # What fer2neuro/memory.py's estimate (a lower bound) let through.
            _end_partial_line()
            raise click.ClickException("out of memory: lower -T, --samples or --batch-size") from None
        except Exception as exc:
            if _out_of_memory(exc):         # torch's allocators raise RuntimeErrors, not MemoryError
                _end_partial_line()
                raise click.ClickException("out of memory: lower -T, --samples or --batch-size") from None
            # A library's wrapper around a full disk (torch.save's RuntimeError)
            # that no writer named: the user's problem, not a bug, so one line.
            full = disk_error(exc)
            if full is None or isinstance(exc, (click.exceptions.Exit, click.exceptions.Abort)):
                raise
            _end_partial_line()
            raise click.ClickException(_os_message(full)) from None
        finally:
            if sys.stderr is tracker:
                sys.stderr = tracker._stream


def _out_of_memory(exc: BaseException) -> bool:
    """torch's own out-of-memory errors: ``torch.OutOfMemoryError`` (CUDA)
    and the CPU allocator's ``RuntimeError: DefaultCPUAllocator: can't
    allocate memory``. torch is looked up, not imported: a command that
    never imported it cannot have raised one."""
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(exc)


def _os_message(exc: OSError) -> str:
    """``PATH: reason`` on one line. A disk error gets the system's short
    text (h5py's is a page naming the hidden temporary file)."""
    reason = os.strerror(exc.errno) if exc.errno in DISK_ERRNOS else exc.strerror
    reason = " ".join(str(reason).split())
    return f"{exc.filename}: {reason}" if exc.filename is not None else f"{reason} (while writing the results)"


def _check_parents(path: str, option: str) -> None:
    """Every existing folder above ``path`` must be a folder."""
    parent = Path(path).parent
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"{option} {path}: {folder} is not a folder")
            return


def _nearest_folder(path) -> Path:
    """The folder a write of ``path`` creates its files in, or the nearest
    existing one above it (links followed: a link is written through)."""
    folder = Path(os.path.realpath(path))
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


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
    label, advice = f"{option} {text}", f"choose another {option}"
    check_target(text, label, advice)           # a regular file or nothing: never a device, a FIFO, an input
    check_name_length(text, label)
    check_writable(_nearest_folder(text), label, advice)    # now, not after the work
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
        kind = "a file" if Path(text).is_file() else "a device, a FIFO or a socket"
        raise ConfigError(f"{option} {text}: is {kind}, not a folder; choose another {option}")
    _check_parents(text, option)
    check_writable(_nearest_folder(text), f"{option} {text}", f"choose another {option}")  # now, not after the work
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


class OutputPath(click.ParamType):
    """``type=OutputPath()`` for an option naming a file or a folder to
    write, which the command checks with :func:`output_file` or
    :func:`output_dir` once it knows which (export: by --target). Marks it
    as an output: not one of the files the command reads."""

    name = "path"

    def convert(self, value, param, ctx):
        return value


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
