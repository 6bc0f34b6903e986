"""The real public data sets beside the checkout, in ``../shared/data`` (never copied here).

Tests reach them only through the ``shared_data`` fixture (tests/conftest.py), which skips with
a reason when a file is absent, so the README's test command passes on a fresh clone with no
``../shared`` beside it. ``QUANTORCH_SHARED_DATA`` points elsewhere (CI sets it to a missing
folder for a second pass that proves the skips).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["SHARED_DATA_ENV", "shared_data_dir", "shared_file"]

SHARED_DATA_ENV = "QUANTORCH_SHARED_DATA"


def shared_data_dir() -> Path:
    """``$QUANTORCH_SHARED_DATA``, else ``../shared/data`` next to the repository."""
    configured = os.environ.get(SHARED_DATA_ENV, "").strip()
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(name: str) -> Path:
    """The data set ``name``; skips the calling test when it is absent."""
    path = shared_data_dir() / name
    if not path.is_file():
        pytest.skip(
            f"{name} is not in {shared_data_dir()} (the real data sets of ../shared/data are "
            "not beside this checkout; the test needs them, the product does not)"
        )
    return path
