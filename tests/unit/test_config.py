from pathlib import Path

import pytest

from quantorch.config import load_config, resolve_db_path
from quantorch.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_default_config_loads_the_sample_universe():
    config = load_config()
    assert len(config.universe) == 20
    assert config.benchmark == "SP500"
    assert config.data.source == "sample"
    assert config.costs.fee_bps > 0 and config.costs.slippage_bps > 0


def test_unknown_key_is_refused_with_its_path(tmp_path):
    path = write(tmp_path, "universe: [AAPL]\ncosts:\n  fee_bsp: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = str(exc.value)
    assert str(path) in message and "costs.fee_bsp" in message and "unknown key" in message


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "universe: [AAPL\nseed: 3\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+"):
        load_config(path)


def test_bad_value_names_field_and_value(tmp_path):
    path = write(tmp_path, "universe: [AAPL]\ncosts:\n  fee_bps: -1\n")
    with pytest.raises(ConfigError, match=r"costs\.fee_bps.*-1"):
        load_config(path)


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="--config"):
        load_config(tmp_path / "nope.yaml")


def test_duplicate_tickers_refused(tmp_path):
    with pytest.raises(ConfigError, match="duplicate"):
        load_config(write(tmp_path, "universe: [AAPL, aapl]\n"))


def test_overrides_are_validated_and_change_the_hash():
    config = load_config()
    changed = config.with_overrides({"costs.fee_bps": 7.5, "universe": ["msft"]})
    assert changed.costs.fee_bps == 7.5 and changed.universe == ["MSFT"]
    assert changed.config_hash() != config.config_hash()
    assert config.with_overrides({}).config_hash() == config.config_hash()
    with pytest.raises(ConfigError, match="rebalance"):
        config.with_overrides({"backtest.rebalance": "hourly"})


def test_hash_ignores_paths():
    config = load_config()
    moved = config.with_overrides({"database.path": "elsewhere.duckdb", "reports_dir": "x"})
    assert moved.config_hash() == config.config_hash()


def test_db_path_precedence(monkeypatch, tmp_path):
    config = load_config()
    monkeypatch.delenv("QUANTORCH_DB", raising=False)
    assert resolve_db_path(config) == Path("quantorch.duckdb")
    monkeypatch.setenv("QUANTORCH_DB", str(tmp_path / "env.duckdb"))
    assert resolve_db_path(config) == tmp_path / "env.duckdb"
    assert resolve_db_path(config, tmp_path / "cli.duckdb") == tmp_path / "cli.duckdb"
