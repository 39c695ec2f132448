"""Exceptions that the command line turns into one-line errors.

Every error a user can cause (a bad file, a wrong option, a checkpoint from
another model) is raised as a subclass of :class:`Fer2NeuroError`; the CLI
prints its message on one line and exits non-zero. Anything else is a bug and
keeps its traceback.
"""


class Fer2NeuroError(Exception):
    """Base class of errors caused by the user's input."""


class DataError(Fer2NeuroError):
    """A data file is missing, malformed or inconsistent."""


class CheckpointError(Fer2NeuroError):
    """A checkpoint is missing, corrupt or belongs to another model."""


class ConfigError(Fer2NeuroError):
    """Options that cannot work together."""
