"""Shared fixtures. Real data samples live in ../shared/data (skipped with a reason if absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RANKITECT_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data with the real Criteo and Avazu sample rows."""
    if not (SHARED_DATA / "criteo_sample.txt").is_file():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (set RANKITECT_SHARED_DATA)")
    return SHARED_DATA
