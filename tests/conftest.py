import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fer_data() -> Path:
    """The real FER2013 folder from FER2NEURO_DATA; skips when unset."""
    value = os.environ.get("FER2NEURO_DATA")
    if not value:
        pytest.skip("FER2NEURO_DATA is not set")
    path = Path(value)
    if not (path / "fer2013.csv.gz").is_file():
        pytest.skip(f"FER2NEURO_DATA={value} holds no fer2013.csv.gz")
    return path
