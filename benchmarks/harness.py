"""What the benchmark scripts share: each variant runs in a child process
(the same script with ``--variant NAME``) so its peak memory is its own."""
from __future__ import annotations

import json
import resource
import subprocess
import sys


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_variant(script: str, variant: str, args: list[str]) -> dict:
    """Run ``script --variant variant *args`` and return the JSON object its
    last stdout line holds."""
    out = subprocess.run([sys.executable, script, "--variant", variant, *args],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])
