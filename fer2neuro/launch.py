"""The ``fer2neuro`` console script and ``python -m fer2neuro``.

The commands import torch and friends, which takes seconds; a Ctrl-C in
that time would end in a traceback, before the command's own handler
(``cli.base``) exists. This module imports nothing heavy and catches it.
"""
import os
import signal
import sys

INTERRUPTED = 130          # the shell's exit status for a process ended by SIGINT


def _interrupted(*_) -> None:
    print("\nError: interrupted", file=sys.stderr, flush=True)
    # os._exit: a half-imported torch is not finalised (its teardown could
    # meet the interrupt again)
    os._exit(INTERRUPTED)


def exit_on_interrupt() -> None:
    """Until ``run`` hands over to the command: Ctrl-C is one line and exit
    130. ``python -m fer2neuro`` calls this from the package's __init__,
    which runs before __main__ (and imports lava_compat, typing...): a
    KeyboardInterrupt there would end in a traceback outside any handler."""
    signal.signal(signal.SIGINT, _interrupted)


def run() -> None:
    exit_on_interrupt()
    try:
        from fer2neuro.cli import main
    except KeyboardInterrupt:      # a SIGINT handler other than ours was in place
        _interrupted()
    # the command's own handling (cli.base) takes KeyboardInterrupt from here on
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main(prog_name="fer2neuro")
