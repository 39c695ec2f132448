"""The ``fer2neuro`` console script and ``python -m fer2neuro``.

The commands import torch and friends, which takes seconds; a Ctrl-C in
that time would end in a traceback, before the command's own handler
(``cli.base``) exists. This module imports nothing heavy and catches it.
"""
import os
import sys

INTERRUPTED = 130          # the shell's exit status for a process ended by SIGINT


def run() -> None:
    try:
        from fer2neuro.cli import main
    except KeyboardInterrupt:
        print("\nError: interrupted", file=sys.stderr, flush=True)
        # os._exit: a half-imported torch is not finalised (its teardown
        # could meet the interrupt again)
        os._exit(INTERRUPTED)
    main(prog_name="fer2neuro")
