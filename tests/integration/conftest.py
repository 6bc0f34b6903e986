import datetime as dt
import shutil
from pathlib import Path

import pytest

from quantorch.config import load_config
from quantorch.data.service import ensure_prices
from quantorch.store import Store


@pytest.fixture(scope="session")
def loaded_db_template(tmp_path_factory) -> Path:
    """A database with the whole sample universe and the benchmark already loaded."""
    path = tmp_path_factory.mktemp("template") / "sample.duckdb"
    config = load_config()
    ensure_prices(
        Store(path), "sample", [*config.universe, config.benchmark],
        dt.date(1990, 1, 1), dt.date(2022, 12, 31),
    )
    return path


@pytest.fixture
def loaded_db(loaded_db_template, tmp_path) -> Path:
    """A private copy of the loaded database for one test."""
    path = tmp_path / "quantorch.duckdb"
    shutil.copy(loaded_db_template, path)
    return path


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Commands write reports under ./backtests: keep them out of the checkout."""
    monkeypatch.chdir(tmp_path)
