"""Import-time compatibility layer that lets lava-nc 0.10 / lava-dl 0.6 run on
Python 3.11 without editing anything in site-packages.

Both wheels declare ``Python < 3.11`` and are installed with
``pip install --no-deps --ignore-requires-python`` (requirements/lava.txt).
Their code is pure Python and works on 3.11 except for three imports:

1. ``lava.magma.compiler.var_model`` declares dataclass fields such as
   ``x: ByteEncoder = ByteEncoder()``.  Since Python 3.11 ``dataclasses``
   rejects any unhashable default (a plain ``@dataclass`` sets ``__hash__`` to
   None) with "ValueError: mutable default ... use default_factory", so the
   module - and with it ``lava.proc.lif.process`` and every other process -
   cannot be imported.  We compile a rewritten copy of its source in which
   those defaults become ``field(default_factory=ByteEncoder)``.

2. ``lava.lib.dl.slayer`` imports ``object_detection`` eagerly, which needs
   torchvision; that is not installed (and no wheel fits our torch build).
   fer2neuro never uses it, so when torchvision cannot be imported we put a
   placeholder module in its place; ``lava.lib.dl.slayer`` and
   ``lava.lib.dl.netx`` then import, and touching the placeholder raises a
   clear ImportError.

3. ``lava.magma.runtime.message_infrastructure.multiprocessing`` calls
   ``mp.set_start_method('fork')`` at import, which raises "context has
   already been set" once any library has fixed the start method (a plain
   ``get_start_method()`` does); we make it a no-op when it is already 'fork'.

All fixes live in one ``sys.meta_path`` finder that only answers for those
three module names and otherwise defers to the normal import machinery.  Each
fix is applied only when the failure it works around would actually happen,
so a fixed upstream release (or an older Python) is left alone.

``install()`` is called by ``import fer2neuro`` and is cheap: it imports
nothing from lava.  ``require_lava()`` imports what fer2neuro needs from lava
and turns "lava is not installed" into a one-line :class:`Fer2NeuroError`;
it also makes Lava's worker processes ignore SIGINT (their parent stops them:
fer2neuro/children.py).
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import types

from fer2neuro.errors import Fer2NeuroError

__all__ = ["install", "uninstall", "require_lava", "OBJECT_DETECTION_MESSAGE"]

VAR_MODEL = "lava.magma.compiler.var_model"
OBJECT_DETECTION = "lava.lib.dl.slayer.object_detection"

OBJECT_DETECTION_MESSAGE = (
    "lava-dl's object_detection needs torchvision, which is not installed; "
    "fer2neuro does not use it"
)

INSTALL_HINT = (
    "Lava is not installed: run `make .venv`, or `pip install --no-deps "
    "--ignore-requires-python -r requirements/lava.txt`"
)

# The lava modules fer2neuro uses; require_lava() imports them.
REQUIRED_MODULES = (
    "lava.magma.core.run_configs",
    "lava.proc.lif.process",
    "lava.lib.dl.netx",
)

# `name: ByteEncoder = ByteEncoder()` -> group 1 is everything up to the `=`.
# The replacement stays on the same line, so line numbers do not move.  The
# module imports only `dataclass, InitVar` from dataclasses, hence the
# self-contained __import__ (it adds no name to the module's namespace).
_BYTE_ENCODER_DEFAULT = re.compile(r"(:\s*ByteEncoder\s*=\s*)ByteEncoder\(\)")
_BYTE_ENCODER_FACTORY = r'\1__import__("dataclasses").field(default_factory=ByteEncoder)'

# lava's runtime forks its process models and calls mp.set_start_method('fork')
# at import time without force=True, which raises "context has already been
# set" once anything else has fixed the start method - even to 'fork', and
# even by a plain mp.get_start_method() call, as several libraries do.
MULTIPROCESSING = "lava.magma.runtime.message_infrastructure.multiprocessing"
_SET_FORK = re.compile(r"""mp\.set_start_method\((['"])fork\1\)""")
_ENSURE_FORK = '__import__("fer2neuro.lava_compat", fromlist=["_"]).ensure_fork_start_method()'


def ensure_fork_start_method() -> None:
    """What lava's ``mp.set_start_method('fork')`` means, without failing
    when the start method was already fixed."""
    import multiprocessing
    import warnings

    current = multiprocessing.get_start_method(allow_none=True)
    if current == "fork":
        return
    if current is not None:
        warnings.warn(f"Lava runs its processes with the 'fork' start method; switching "
                      f"multiprocessing from {current!r} to 'fork'", RuntimeWarning, stacklevel=2)
    multiprocessing.set_start_method("fork", force=True)


# Marks our finder in sys.meta_path, so install() stays idempotent even if
# this module is reloaded (which would create a new finder class).
_MARKER = "_fer2neuro_lava_compat"


@functools.lru_cache(maxsize=None)
def _dataclass_rejects_dataclass_default() -> bool:
    """True where ``@dataclass`` refuses another dataclass instance as a
    default - the actual failure condition of var_model (Python >= 3.11)."""
    import dataclasses

    @dataclasses.dataclass
    class _Inner:
        pass

    try:
        @dataclasses.dataclass
        class _Outer:
            x: _Inner = _Inner()
    except ValueError:
        return True
    return False


def _torchvision_problem() -> str | None:
    """None if torchvision imports; otherwise why it does not."""
    if "torchvision" in sys.modules:
        return None
    if importlib.util.find_spec("torchvision") is None:
        return "not installed"
    # Installed: object_detection would import it right away anyway, so
    # trying it here costs nothing extra; a build that does not match our
    # torch fails at import time, and we then fall back to the placeholder.
    try:
        importlib.import_module("torchvision")
    except Exception as exc:  # noqa: BLE001 - any failure means "unusable"
        return f"{type(exc).__name__}: {exc}"
    return None


# ---------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------

class _RewritingSourceLoader(importlib.machinery.SourceFileLoader):
    """Loads a lava module from its real file with one same-line regex
    rewrite.  The code is compiled under the real path, so ``__file__``,
    tracebacks, linecache and ``inspect`` all point at the file on disk and
    every line number is unchanged.  The byte-code cache is neither read
    (the stock .pyc holds the unpatched code) nor written (no files on disk
    change)."""

    def __init__(self, fullname, path, pattern: re.Pattern, replacement: str):
        super().__init__(fullname, path)
        self.pattern, self.replacement = pattern, replacement

    def get_code(self, fullname):
        source = importlib.util.decode_source(self.get_data(self.path))
        patched = self.pattern.sub(self.replacement, source)
        return compile(patched, self.path, "exec", dont_inherit=True)


class _PlaceholderModule(types.ModuleType):
    """Stands in for lava-dl's object_detection package.

    Dunder look-ups (``__file__``, ``__path__``, ``__wrapped__`` ...) raise
    AttributeError as usual, because tools such as inspect, pytest and the
    import system probe them with ``getattr(module, name, default)`` on every
    module in sys.modules.  Anything else raises the clear ImportError."""

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        raise ImportError(
            f"{self.__dict__.get('_reason_message', OBJECT_DETECTION_MESSAGE)}"
            f" (tried to use {self.__name__}.{name})",
            name=self.__name__,
        )

    def __dir__(self):
        return sorted(self.__dict__)


class _PlaceholderLoader(importlib.abc.Loader):
    def __init__(self, reason: str):
        self.reason = reason

    def create_module(self, spec):
        return _PlaceholderModule(spec.name)

    def exec_module(self, module):
        message = OBJECT_DETECTION_MESSAGE
        if self.reason != "not installed":
            message += f" (torchvision is installed but does not import: {self.reason})"
        module.__dict__["_reason_message"] = message
        # An empty __path__ makes it a package, so importing a submodule of
        # it reaches our finder and gets the same clear message.
        module.__path__ = []
        module.__doc__ = f"Placeholder installed by fer2neuro.lava_compat: {message}."


# ---------------------------------------------------------------------------
# Finder
# ---------------------------------------------------------------------------

class _LavaCompatFinder(importlib.abc.MetaPathFinder):
    """Answers only for VAR_MODEL, MULTIPROCESSING and OBJECT_DETECTION (and submodules of a
    placeholder); returns None for everything else."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == VAR_MODEL:
            return self._var_model_spec(fullname, path, target)
        if fullname == MULTIPROCESSING:
            return self._rewritten_spec(fullname, path, target, _SET_FORK, _ENSURE_FORK)
        if fullname == OBJECT_DETECTION:
            return self._object_detection_spec(fullname, path, target)
        if fullname.startswith(OBJECT_DETECTION + "."):
            parent = sys.modules.get(OBJECT_DETECTION)
            if isinstance(parent, _PlaceholderModule):
                raise ModuleNotFoundError(
                    parent.__dict__.get("_reason_message", OBJECT_DETECTION_MESSAGE),
                    name=fullname,
                )
        return None

    def _real_spec(self, fullname, path, target):
        """The spec the rest of sys.meta_path would produce."""
        for finder in sys.meta_path:
            if getattr(finder, _MARKER, False):
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None

    def _var_model_spec(self, fullname, path, target):
        if not _dataclass_rejects_dataclass_default():
            return None
        return self._rewritten_spec(fullname, path, target, _BYTE_ENCODER_DEFAULT, _BYTE_ENCODER_FACTORY)

    def _rewritten_spec(self, fullname, path, target, pattern, replacement):
        """The real spec with a rewriting loader, if the file has ``pattern``."""
        spec = self._real_spec(fullname, path, target)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        try:
            with open(spec.origin, "rb") as fh:
                source = importlib.util.decode_source(fh.read())
        except OSError:
            return spec
        if not pattern.search(source):
            return spec  # upstream fixed it: load the file unchanged
        # Same name and origin: only the loader changes.
        spec.loader = _RewritingSourceLoader(fullname, spec.origin, pattern, replacement)
        spec.cached = None  # the .pyc next to it holds the unpatched code
        return spec

    def _object_detection_spec(self, fullname, path, target):
        reason = _torchvision_problem()
        if reason is None:
            return None  # torchvision works: import the real package
        return importlib.machinery.ModuleSpec(
            fullname,
            _PlaceholderLoader(reason),
            origin="placeholder (fer2neuro.lava_compat)",
        )


setattr(_LavaCompatFinder, _MARKER, True)


def install() -> None:
    """Put the compatibility finder first on ``sys.meta_path`` (once).

    Cheap: imports nothing from lava.  Has no effect on modules that are
    already imported."""
    if not any(getattr(f, _MARKER, False) for f in sys.meta_path):
        sys.meta_path.insert(0, _LavaCompatFinder())


def uninstall() -> None:
    """Remove the finder (for tests); already imported modules stay."""
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, _MARKER, False)]


def _is_lava_itself(name: str | None) -> bool:
    """True if a missing module `name` is lava's own package (i.e. lava-nc or
    lava-dl is not installed) rather than one of its dependencies."""
    if not name:
        return False
    return any(req == name or req.startswith(name + ".") for req in REQUIRED_MODULES)


def require_lava() -> None:
    """Install the layer and import the lava modules fer2neuro needs.

    Raises Fer2NeuroError (one line) when lava-nc / lava-dl is not installed;
    any other import failure keeps its traceback."""
    install()
    for name in REQUIRED_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if _is_lava_itself(exc.name):
                raise Fer2NeuroError(INSTALL_HINT) from exc
            raise
    _workers_ignore_ctrl_c()


def _workers_ignore_ctrl_c() -> None:
    """Lava's worker processes ignore SIGINT. A Ctrl-C in a terminal goes to
    the whole foreground process group: each worker would print its own
    KeyboardInterrupt traceback, while the parent, which gets it too, stops
    them anyway (targets/lava/processes.py ``stopping``). Set at the start of
    the worker's ``run``, after every at-fork hook (atomic.py's gives a
    forked child the parent's SIGINT handler back)."""
    import signal

    system_process = getattr(importlib.import_module(MULTIPROCESSING), "SystemProcess", None)
    if system_process is None or getattr(system_process.run, _MARKER, False):
        return
    lava_run = system_process.run

    def run(self):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        lava_run(self)

    setattr(run, _MARKER, True)
    system_process.run = run
