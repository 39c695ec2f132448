"""How a value read from a file appears in a one-line error: cut short,
since a hostile file's field may be a megabyte string, a list of a million
names or a large array."""
from __future__ import annotations

import numpy as np


def shown(value, limit: int = 60) -> str:
    """``repr(value)`` on one line, at most ``limit`` characters; an array
    of more than 8 values as its shape."""
    if isinstance(value, np.ndarray):
        if value.size > 8:
            return f"an array of shape {value.shape}"
        value = value.tolist()
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
