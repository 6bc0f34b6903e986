"""Every error is one line with its documented exit code (2 input, 3 temporary), never a
traceback or an internal error (70), and nothing is written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from quantorch.cli.main import app
from quantorch.store import Store
from quantorch.store._schema import LATEST_VERSION

runner = CliRunner()


def invoke(*args: str, env: dict | None = None):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# ---- settings files and flags ------------------------------------------------------------------


def test_binary_config_and_profile_files_are_refused(tmp_path):
    binary = tmp_path / "garbage.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    result = invoke("backtest", "--start", "2020", "--config", str(binary), "--db",
                    str(tmp_path / "q.duckdb"))
    assert result.exit_code == 2
    assert "not a text YAML file" in one_line(result.stderr)
    result = invoke("profile", "validate", str(binary))
    assert result.exit_code == 2 and "not a text YAML file" in one_line(result.stderr)
    result = invoke("backtest", "--start", "2020", "--profile", str(binary), "--db",
                    str(tmp_path / "q.duckdb"))
    assert result.exit_code == 2 and "not a text YAML file" in one_line(result.stderr)
    assert not (tmp_path / "q.duckdb").exists()


@pytest.mark.parametrize("flag, value", [("--initial-cash", "inf"), ("--initial-cash", "nan"),
                                         ("--fee-bps", "inf"), ("--slippage-bps", "-1")])
def test_non_finite_or_negative_numbers_name_the_flag(tmp_path, flag, value):
    result = invoke("backtest", "--start", "2020", flag, value, "--db", str(tmp_path / "q.duckdb"))
    assert result.exit_code == 2
    assert f"bad {flag}" in one_line(result.stderr)
    assert not (tmp_path / "q.duckdb").exists()


def test_a_bad_lock_timeout_is_a_setting_error(tmp_path):
    result = invoke("data", "list", "--db", str(tmp_path / "q.duckdb"),
                    env={"QUANTORCH_LOCK_TIMEOUT": "abc"})
    assert result.exit_code == 2
    assert "QUANTORCH_LOCK_TIMEOUT='abc'" in one_line(result.stderr)


def test_usage_errors_are_one_line_with_the_hint():
    result = invoke("backtest", "--bogus")
    assert result.exit_code == 2
    line = one_line(result.stderr)
    assert "No such option: --bogus" in line and "quantorch backtest --help" in line
    result = invoke("data", "bogus")
    assert result.exit_code == 2 and "quantorch data --help" in one_line(result.stderr)


def test_error_text_is_printed_as_is_not_as_markup(tmp_path, monkeypatch):
    """`pip install 'quantorch[online]'` must not lose its brackets to rich markup."""
    import quantorch.data.providers as providers
    from quantorch.errors import UserInputError

    def missing_extra(name):
        raise UserInputError("yfinance is not installed: pip install 'quantorch[online]' [bold]x[/]")

    monkeypatch.setattr(providers, "get_provider", missing_extra)
    result = invoke("data", "fetch", "--source", "yfinance", "--db", str(tmp_path / "q.duckdb"))
    assert result.exit_code == 2
    assert "pip install 'quantorch[online]' [bold]x[/]" in one_line(result.stderr)


@pytest.mark.parametrize("args", [
    ("--orchestrator", "polcy"),
    ("--profile", "nobody"),
    ("--strategy", "sma-crss"),
    ("--universe", "APPL"),
])
def test_cheap_checks_fail_fast_before_heavy_imports(tmp_path, args):
    env = {**os.environ, "QUANTORCH_DB": str(tmp_path / "q.duckdb")}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "quantorch.cli.main", "backtest", "--start",
                             "2020", *args], capture_output=True, text=True, env=env, cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert "did you mean" in one_line(result.stderr) or "unknown" in result.stderr
    assert elapsed < 6.0, f"took {elapsed:.1f}s: the check ran after the heavy imports"
    assert not (tmp_path / "q.duckdb").exists()


def test_third_party_warnings_stay_off_stderr(loaded_db, tmp_path):
    result = subprocess.run(
        [sys.executable, "-W", "default", "-m", "quantorch.cli.main", "backtest", "--start",
         "2022", "--universe", "AAPL,MSFT", "--strategy", "buy-and-hold", "--json",
         "--db", str(loaded_db)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


# ---- the database -----------------------------------------------------------------------------


def test_a_newer_schema_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "future.duckdb"
    Store(path).migrate()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (?, 'from the future', now())",
                [LATEST_VERSION + 3])
    con.close()
    before = path.read_bytes()
    for args in (("data", "list"), ("query", "SELECT 1"),
                 ("backtest", "--start", "2022", "--strategy", "buy-and-hold")):
        result = invoke(*args, "--db", str(path))
        assert result.exit_code == 2, (args, result.stderr)
        line = one_line(result.stderr)
        assert f"schema version {LATEST_VERSION + 3}" in line and "upgrade quantorch" in line
    assert path.read_bytes() == before


def test_read_only_commands_create_no_database(tmp_path):
    missing = tmp_path / "nothing-here.duckdb"
    assert invoke("data", "list", "--db", str(missing)).exit_code == 0
    assert invoke("query", "SELECT 1", "--db", str(missing)).exit_code == 2
    assert not missing.exists() and not any(tmp_path.iterdir())


def _tiny_filesystem(folder: Path) -> bool:
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)],
                          capture_output=True)
    return done.returncode == 0


def test_a_full_disk_at_commit_is_temporary_and_stores_nothing(tmp_path):
    disk = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    if not _tiny_filesystem(disk):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount)")
    try:
        db = disk / "q.duckdb"
        result = invoke("backtest", "--start", "2022", "--strategy", "buy-and-hold", "--db",
                        str(db))
        assert result.exit_code == 3, result.stderr
        line = one_line(result.stderr)
        assert "cannot write to database" in line and "free disk space" in line
        con = duckdb.connect(str(db), read_only=True)
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
        con.close()
        assert not list((tmp_path / "backtests").glob("*.html")) if (tmp_path / "backtests").exists() else True
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# ---- an LLM endpoint ----------------------------------------------------------------------------

_NEWS = """published_at,ticker,headline,source
2021-03-01T13:05:00Z,AAPL,"Apple shares rise as iPhone demand in China stays strong",newswire
2021-03-01T15:40:00Z,AAPL,"Apple supplier warns chip shortage could hit Mac and iPad output",newswire
"""


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("setting, code, words", [
    ({"QUANTORCH_LLM_BASE_URL": None, "QUANTORCH_LLM_MODEL": None}, 2, "set QUANTORCH_LLM_BASE_URL"),
    ({"QUANTORCH_LLM_BASE_URL": "http://127.0.0.1:{port}/v1", "QUANTORCH_LLM_MODEL": "m"}, 3,
     "unreachable"),
    ({"QUANTORCH_LLM_BASE_URL": "ftp://127.0.0.1/v1", "QUANTORCH_LLM_MODEL": "m"}, 2,
     "not a usable http(s) URL"),
])
def test_llm_endpoint_faults_map_to_their_exit_codes(loaded_db, tmp_path, monkeypatch, setting,
                                                     code, words):
    news = tmp_path / "news.csv"
    news.write_text(_NEWS)
    assert invoke("data", "import-news", str(news), "--db", str(loaded_db)).exit_code == 0
    port = _free_port()
    for name, value in setting.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value.format(port=port))
    result = invoke("tools", "run", "sentiment", "--provider", "llm", "--ticker", "AAPL",
                    "--asof", "2021-03-02", "--db", str(loaded_db))
    assert result.exit_code == code, result.stderr
    assert words in result.stderr.splitlines()[-1]
