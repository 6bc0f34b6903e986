"""``quantorch tools list | run`` on the real sample database."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from quantorch.cli.tools_cmd import tools_app
from quantorch.toolkit import registry

runner = CliRunner()
DOCS = Path(__file__).resolve().parents[2] / "docs" / "tools.md"


def invoke(*args: str):
    return runner.invoke(tools_app, list(args), catch_exceptions=False)


@pytest.fixture(autouse=True)
def _fresh_discovery():
    registry.clear_cache()
    yield
    registry.clear_cache()


def test_list_shows_every_tool_with_prices():
    result = invoke("list")
    assert result.exit_code == 0, result.stderr
    for name in ("technical", "risk", "basic", "full", "fast", "$0.0005", "$0.005"):
        assert name in result.stdout


def test_list_json_and_openai():
    listed = json.loads(invoke("list", "--json").stdout)
    by_name = {t["name"]: t for t in listed}
    risk = {p["name"]: p for p in by_name["risk"]["providers"]}
    assert risk["full"]["usd_per_call"] == 0.005 and risk["full"]["expected_cost_usd"] == 0.005
    assert "garch_vol" in risk["full"]["outputs"] and "garch_vol" not in risk["fast"]["outputs"]
    tools = json.loads(invoke("list", "--openai").stdout)
    names = [t["function"]["name"] for t in tools]
    assert {"technical", "risk"} <= set(names) and all(t["type"] == "function" for t in tools)
    technical = tools[names.index("technical")]["function"]["parameters"]
    assert technical["properties"]["provider"]["enum"] == ["basic", "full"]
    assert technical["required"] == ["ticker"]
    both = invoke("list", "--json", "--openai")
    assert both.exit_code == 2 and "pass one of them" in both.stderr


def test_run_prints_the_result_and_its_cost_then_a_repeat_is_free(loaded_db):
    db = str(loaded_db)
    first = invoke("run", "technical", "--ticker", "aapl", "--asof", "2021-03-01", "--db", db)
    assert first.exit_code == 0, first.stderr
    assert "technical:basic AAPL as of 2021-03-01 (close)" in first.stdout
    assert "rsi14" in first.stdout and "cost $0.0005" in first.stdout
    again = json.loads(invoke("run", "technical", "--ticker", "AAPL", "--asof", "2021-03-01",
                              "--json", "--db", db).stdout)
    assert again["cache_hit"] is True and again["cost_usd"] == 0
    assert again["asof"] == "2021-03-01T21:00:00" and again["units"]["rsi14"] == "fraction"
    with duckdb.connect(db, read_only=True) as con:
        rows = con.execute("SELECT tool, provider, ticker, cache_hit, cost_usd, run_id FROM tool_calls").fetchall()
    assert rows == [("technical", "basic", "AAPL", False, 0.0005, None),
                    ("technical", "basic", "AAPL", True, 0.0, None)]


def test_run_risk_full_json(loaded_db):
    result = invoke("run", "risk", "--ticker", "KO", "--asof", "2020-03-20", "--provider", "full",
                    "--json", "--db", str(loaded_db))
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["provider"] == "full" and payload["cost_usd"] == 0.005 and payload["error"] is None
    features = payload["features"]
    assert features["vol21"] > 0.4  # March 2020
    assert 0 < features["garch_vol"] and features["beta252"] is not None
    assert features["drawdown"] < -0.2


def test_run_without_asof_uses_the_last_session(loaded_db):
    payload = json.loads(invoke("run", "technical", "--ticker", "KO", "--json", "--db", str(loaded_db)).stdout)
    assert payload["asof"].startswith("2022-12-28")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run", "technicl", "--ticker", "AAPL"], 2, "unknown tool 'technicl' (did you mean technical?); tools: "),
        (["run", "risk", "--ticker", "AAPL", "--provider", "slow"], 2, "unknown provider 'slow' for tool risk; providers: fast, full"),
        (["run", "risk", "--ticker", "APPL"], 2, "unknown ticker 'APPL' for source sample (did you mean AAPL?)"),
        (["run", "risk", "--ticker", "AAPL", "--asof", "2024-01-02"], 2, "asof 2024-01-02 (close) is after the last AAPL session available; the AAPL data runs from 1990-01-02 to 2022-12-28"),
        (["run", "risk", "--ticker", "AAPL", "--asof", "1985-06-03"], 2, "is before the first AAPL bar"),
        (["run", "risk", "--ticker", "AAPL", "--asof", "03/01/2021"], 2, "bad --asof '03/01/2021'"),
        (["run", "risk", "--ticker", "AAPL", "--args", "{window: 3}"], 2, "--args is not valid JSON"),
        (["run", "risk", "--ticker", "AAPL", "--args", '{"window": 3}'], 2, "invalid arguments for tool risk"),
    ],
)
def test_run_errors_are_one_clear_line(loaded_db, args, code, message):
    result = invoke(*args, "--db", str(loaded_db))
    assert result.exit_code == code
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr


def test_extra_tool_folders_from_the_config(loaded_db, tmp_path):
    folder = tmp_path / "my_tools"
    folder.mkdir()
    example = re.search(r"```python\n(.*?)```", DOCS.read_text()[DOCS.read_text().index("A complete example"):], re.DOTALL)
    (folder / "momentum.py").write_text(example.group(1))
    config = tmp_path / "q.yaml"
    config.write_text(yaml.safe_dump({"universe": ["AAPL"], "tools": {"extra_dirs": [str(folder)]}}))
    listed = invoke("list", "--config", str(config))
    assert listed.exit_code == 0 and "momentum" in listed.stdout
    ran = invoke("run", "momentum", "--ticker", "AAPL", "--asof", "2021-03-01", "--json",
                 "--config", str(config), "--db", str(loaded_db))
    assert ran.exit_code == 0, ran.stderr
    assert json.loads(ran.stdout)["cost_usd"] == 0.0002

    (folder / "broken.py").write_text("raise ImportError('no such thing')\n")
    registry.clear_cache()
    broken = invoke("list", "--config", str(config))
    assert broken.exit_code == 4 and "broken.py failed to import" in broken.stderr


def test_a_faulty_tool_exits_4_with_its_error(loaded_db, tmp_path):
    folder = tmp_path / "my_tools"
    folder.mkdir()
    example = re.search(r"```python\n(.*?)```", DOCS.read_text()[DOCS.read_text().index("A complete example"):], re.DOTALL)
    source = example.group(1).replace(
        "        close = data.prices.close.reindex(columns=tickers)\n",
        "        raise RuntimeError('disk on fire')\n",
    )
    (folder / "momentum.py").write_text(source)
    config = tmp_path / "q.yaml"
    config.write_text(yaml.safe_dump({"universe": ["AAPL"], "tools": {"extra_dirs": [str(folder)]}}))
    result = invoke("run", "momentum", "--ticker", "AAPL", "--asof", "2021-03-01",
                    "--config", str(config), "--db", str(loaded_db))
    assert result.exit_code == 4
    assert "tool fault: momentum:basic raised RuntimeError: disk on fire" in result.stderr


def test_run_cross_section_ranks_within_the_config_universe(loaded_db, tmp_path):
    """A single call of a tool that reads the universe loads the config's universe beside the
    ticker; with a universe of one there is nothing to rank: no data, not charged."""
    day = ["--ticker", "KO", "--asof", "2021-03-01", "--json", "--db", str(loaded_db)]
    ranked = json.loads(invoke("run", "cross_section", *day).stdout)
    assert ranked["coverage"] and ranked["cost_usd"] == 0.0005
    assert -0.5 <= ranked["features"]["rank_return_5d"] <= 0.5
    config = tmp_path / "alone.yaml"
    config.write_text(yaml.safe_dump({"universe": ["KO"]}))
    alone = json.loads(invoke("run", "cross_section", *day, "--config", str(config)).stdout)
    assert not alone["coverage"] and alone["cost_usd"] == 0
