"""Exceptions that the command line turns into one-line errors.

Every error a user can cause (a bad file, a wrong option, a checkpoint from
another model) is raised as a subclass of :class:`Fer2NeuroError`; the CLI
prints its message on one line and exits non-zero. Anything else is a bug and
keeps its traceback.
"""


def one_line(exc: BaseException | str, limit: int | None = None) -> str:
    """A library's message (an exception or its text) on one line, its
    whitespace collapsed, cut to ``limit`` characters: what a one-line error
    quotes of a reason it did not write itself."""
    return " ".join(str(exc).split())[:limit]


class Fer2NeuroError(Exception):
    """Base class of errors caused by the user's input."""


class DataError(Fer2NeuroError):
    """A data file is missing, malformed or inconsistent."""


class CheckpointError(Fer2NeuroError):
    """A checkpoint is missing, corrupt or belongs to another model."""


class ConfigError(Fer2NeuroError):
    """Options that cannot work together."""


class GraphError(Fer2NeuroError):
    """A NIR graph file is missing or unreadable, or a graph is malformed."""


class TargetError(Fer2NeuroError):
    """A simulation target cannot run a graph (an unsupported node, a cycle)."""


class VerificationError(Fer2NeuroError):
    """A backend's spikes differ from the reference where they must match."""


class TrainingError(Fer2NeuroError):
    """Training diverged: a loss or a weight became NaN or infinite (the run
    stops before it saves anything of the failing epoch)."""


class ResourceError(ConfigError):
    """A run would need more memory than the machine has (fer2neuro/memory.py
    estimates it before allocating): lower the options that size it."""
