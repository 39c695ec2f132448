"""samna kept out of a peer runner's process (the Sinabs and Rockpool
runners import this sibling file first, before any peer import).

samna (SynSense's hardware SDK) on PyPI, 0.48.6, is a stub whose
``__init__`` runs ``pip install --force-reinstall samna==... --index-url
<gitlab>`` when imported. Importing this module puts a finder first on
``sys.meta_path`` that refuses ``import samna`` (and its submodules) before
any other finder looks, so the stub's code never runs, and sets
PIP_NO_INDEX so that should a pip run anyway, it reaches no index. It
imports only the standard library.
"""
from __future__ import annotations

import importlib.abc
import os
import sys

os.environ["PIP_NO_INDEX"] = "1"
BLOCKED: list[str] = []          # the module names refused, in order


class _BlockSamna(importlib.abc.MetaPathFinder):
    """Refuses ``import samna`` (and its submodules) before any other finder
    looks, so the stub's code never runs."""

    def find_spec(self, name, path=None, target=None):
        if name == "samna" or name.startswith("samna."):
            BLOCKED.append(name)
            raise ModuleNotFoundError(f"import of {name!r} blocked by the fer2neuro runner (samna's PyPI "
                                      f"stub pip-installs from the network when imported)", name=name)
        return None


sys.meta_path.insert(0, _BlockSamna())


def note(report, importer: str = "") -> None:
    """Say in the report which samna imports were refused (``importer``: the
    peer's line that imports samna, where it has one)."""
    if BLOCKED:
        report.notes.append(f"blocked import of {', '.join(sorted(set(BLOCKED)))} (samna's PyPI stub "
                            f"pip-installs from the network on import{'; ' + importer if importer else ''})")
