"""Paper trading end to end on the real sample data: the CLI, parity with the backtest,
idempotent cycles, independent accounts, and every fault the issue names (one clear line,
nothing lost)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import quantorch.configs
from quantorch.brokers.simulated import SimulatedBroker
from quantorch.cli.main import app
from quantorch.config import load_config
from quantorch.errors import DataSourceUnavailableError
from quantorch.paper.cycle import PaperTrader, ReconciliationError, account_run_id
from quantorch.paper.reconcile import reconcile
from quantorch.store import Store, repository

runner = CliRunner()


def paper(db, *args, env=None):
    return runner.invoke(app, ["paper", *args, "--db", str(db)],
                         env={"QUANTORCH_LOCK_TIMEOUT": "5", **(env or {})},
                         catch_exceptions=False)


def rows(db, sql, params=()):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).df()
    finally:
        con.close()


def trader(db, account="acct", *, broker=None, **overrides) -> PaperTrader:
    config = load_config().with_overrides({"paper.account": account, **overrides})
    return PaperTrader(config, Store(db), broker=broker)


# ---- parity: paper replay == backtest ---------------------------------------------------------


def test_paper_replay_reproduces_the_backtest_fill_for_fill(loaded_db):
    period = ("--start", "2021-01-04", "--end", "2021-04-30")
    result = paper(loaded_db, "replay", *period, "--account", "parity", "--json")
    assert result.exit_code == 0, result.stderr
    replay = json.loads(result.stdout)
    assert replay["sessions"] == 82 and replay["account"]["account"] == "parity"
    result = runner.invoke(app, ["backtest", *period, "--db", str(loaded_db), "--json"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]

    backtest = rows(loaded_db, "SELECT date, equity, cash FROM equity WHERE run_id = ? "
                               "ORDER BY date", [run_id])
    paper_curve = rows(loaded_db, "SELECT date, equity, cash FROM equity WHERE run_id = ? "
                                  "ORDER BY date", [account_run_id("parity")])
    assert list(paper_curve["date"]) == list(backtest["date"])
    np.testing.assert_allclose(paper_curve["equity"], backtest["equity"], rtol=1e-9)
    np.testing.assert_allclose(paper_curve["cash"], backtest["cash"], rtol=1e-9, atol=1e-6)

    fills_bt = rows(loaded_db, "SELECT fill_date AS day, ticker, side, quantity, fill_price, fees "
                               "FROM fills WHERE run_id = ? ORDER BY day, ticker", [run_id])
    fills_pp = rows(loaded_db, "SELECT fill_session AS day, ticker, side, quantity, fill_price, "
                               "fees FROM broker_fills WHERE account = 'parity' "
                               "ORDER BY day, ticker")
    assert len(fills_pp) == len(fills_bt) > 100
    assert (fills_pp[["day", "ticker", "side"]].to_numpy()
            == fills_bt[["day", "ticker", "side"]].to_numpy()).all()
    for column in ("quantity", "fill_price", "fees"):
        np.testing.assert_allclose(fills_pp[column], fills_bt[column], rtol=1e-9)
    # every decision made real, logged tool calls, stored under the cycle's run
    calls = rows(loaded_db, "SELECT count(*) AS n FROM tool_calls WHERE run_id IN "
                            "(SELECT run_id FROM cycles WHERE account = 'parity')")
    assert calls["n"].iloc[0] > 0


# ---- idempotent cycles ------------------------------------------------------------------------


def test_a_done_cycle_runs_again_as_a_no_op_and_a_replay_resumes(loaded_db):
    assert paper(loaded_db, "replay", "--start", "2021-03-01", "--end", "2021-03-12").exit_code == 0
    before = rows(loaded_db, "SELECT count(*) AS n FROM orders").iloc[0, 0], rows(
        loaded_db, "SELECT count(*) AS n FROM broker_fills").iloc[0, 0]
    again = paper(loaded_db, "run-once", "--asof", "2021-03-12", "--json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["cycles"][0]["status"] == "already done"
    more = paper(loaded_db, "replay", "--start", "2021-03-01", "--end", "2021-03-19", "--json")
    assert json.loads(more.stdout)["already_done"] == 10
    after = rows(loaded_db, "SELECT count(*) AS n FROM orders").iloc[0, 0]
    assert after > before[0]  # the week after decided and sent; the first weeks added nothing
    ids = rows(loaded_db, "SELECT client_order_id FROM orders")["client_order_id"]
    assert ids.is_unique


def test_missed_sessions_are_caught_up_before_the_cycle(loaded_db):
    assert paper(loaded_db, "run-once", "--asof", "2021-03-01").exit_code == 0
    result = paper(loaded_db, "run-once", "--asof", "2021-03-05", "--json")
    assert result.exit_code == 0, result.stderr
    cycles = json.loads(result.stdout)["cycles"]
    assert [c["status"] for c in cycles] == ["missed", "missed", "missed", "done"]
    assert [c["decided"] for c in cycles] == [False, False, False, True]
    sent = rows(loaded_db, "SELECT count(*) FROM orders WHERE decision_session = '2021-03-01'")
    assert cycles[0]["fills"] == sent.iloc[0, 0] > 0  # 03-01's orders filled at 03-02's open
    history = paper(loaded_db, "history", "--json")
    assert [c["status"] for c in json.loads(history.stdout)["cycles"]] == [
        "done", "missed", "missed", "missed", "done"]


# ---- independent accounts ---------------------------------------------------------------------


def test_two_accounts_with_different_profiles_share_a_database_untouched(loaded_db, tmp_path):
    alone = tmp_path / "alone.duckdb"
    alone.write_bytes(loaded_db.read_bytes())
    period = ("--start", "2021-02-01", "--end", "2021-03-31")
    assert paper(alone, "replay", *period, "--account", "alice").exit_code == 0
    assert paper(loaded_db, "replay", *period, "--account", "alice").exit_code == 0
    assert paper(loaded_db, "replay", *period, "--account", "bob",
                 "--profile", "cautious-fundamental").exit_code == 0
    curve = "SELECT date, equity FROM equity WHERE run_id = ? ORDER BY date"
    shared = rows(loaded_db, curve, [account_run_id("alice")])
    solo = rows(alone, curve, [account_run_id("alice")])
    pd.testing.assert_frame_equal(shared, solo)
    bob = rows(loaded_db, curve, [account_run_id("bob")])
    assert not np.allclose(bob["equity"], shared["equity"])
    accounts = rows(loaded_db, "SELECT account, profile FROM paper_accounts ORDER BY 1")
    assert accounts.values.tolist() == [["alice", "neutral"], ["bob", "cautious-fundamental"]]
    owners = rows(loaded_db, "SELECT DISTINCT account, split_part(client_order_id, '-', 1) AS p "
                             "FROM orders ORDER BY 1")
    assert owners.values.tolist() == [["alice", "alice"], ["bob", "bob"]]
    # bob's later cycle uses bob's profile without --profile (an account keeps its own)
    result = paper(loaded_db, "run-once", "--account", "bob", "--asof", "2021-04-01", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["account"]["profile"] == "cautious-fundamental"


# ---- bad input and faults: one line, nothing lost ---------------------------------------------


def test_a_profile_change_mid_life_is_refused(loaded_db, tmp_path):
    profile = tmp_path / "mine.yaml"
    neutral = (Path(quantorch.configs.__file__).parent / "traders" / "neutral.yaml").read_text()
    profile.write_text(neutral.replace("name: neutral", "name: mine"))
    assert paper(loaded_db, "run-once", "--asof", "2021-03-01", "--profile",
                 str(profile)).exit_code == 0
    result = paper(loaded_db, "run-once", "--asof", "2021-03-02", "--profile", "neutral")
    assert result.exit_code == 2
    assert "a profile cannot change under a live account" in result.stderr
    assert "--account NAME" in result.stderr
    profile.write_text(neutral.replace("name: neutral", "name: mine").replace(
        "risk_aversion: 2.0", "risk_aversion: 3.0"))  # same name, other settings
    result = paper(loaded_db, "run-once", "--asof", "2021-03-02")
    assert result.exit_code == 2 and "its settings" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert rows(loaded_db, "SELECT count(*) FROM cycles").iloc[0, 0] == 1


def test_an_unknown_account_or_profile_is_one_line(loaded_db):
    result = paper(loaded_db, "status", "--account", "nobody")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: no paper account 'nobody'; accounts: none yet"
    result = paper(loaded_db, "run-once", "--asof", "2021-03-01", "--profile", "nuetral")
    assert result.exit_code == 2 and "did you mean neutral?" in result.stderr
    assert rows(loaded_db, "SELECT count(*) FROM paper_accounts").iloc[0, 0] == 0


def test_a_holiday_is_skipped_and_writes_nothing(loaded_db):
    result = paper(loaded_db, "run-once", "--asof", "2021-12-24")
    assert result.exit_code == 0
    assert "2021-12-24 is not an NYSE session: no cycle" in result.stdout
    assert rows(loaded_db, "SELECT count(*) FROM paper_accounts").iloc[0, 0] == 0


def test_a_clock_earlier_than_the_last_cycle_is_refused(loaded_db):
    assert paper(loaded_db, "run-once", "--asof", "2021-03-05").exit_code == 0
    result = paper(loaded_db, "run-once", "--asof", "2021-03-03")
    assert result.exit_code == 2
    assert "2021-03-03 is earlier: cycles run forward" in result.stderr
    assert "nothing was done" in result.stderr


def test_a_data_source_down_marks_the_cycle_failed_and_the_retry_completes(
        loaded_db, monkeypatch):
    assert paper(loaded_db, "run-once", "--asof", "2021-03-01").exit_code == 0
    positions = rows(loaded_db, "SELECT * FROM positions ORDER BY ticker")
    import quantorch.paper.cycle as cycle

    def unreachable(*args, **kwargs):
        raise DataSourceUnavailableError("cannot reach Yahoo Finance (connection refused): "
                                         "retry later")

    with monkeypatch.context() as patch:
        patch.setattr(cycle, "ensure_prices", unreachable)
        result = paper(loaded_db, "run-once", "--asof", "2021-03-02")
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1 and "retry later" in result.stderr
    cycles = rows(loaded_db, "SELECT session, status, message FROM cycles ORDER BY session")
    assert cycles["status"].tolist() == ["done", "failed"]
    assert cycles["message"].iloc[1].startswith("will retry: cannot reach Yahoo Finance")
    pd.testing.assert_frame_equal(rows(loaded_db, "SELECT * FROM positions ORDER BY ticker"),
                                  positions)
    assert rows(loaded_db, "SELECT count(*) FROM broker_fills").iloc[0, 0] == 0
    again = paper(loaded_db, "run-once", "--asof", "2021-03-02", "--json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["cycles"][0]["status"] == "done"
    assert rows(loaded_db, "SELECT count(*) FROM broker_fills").iloc[0, 0] == rows(
        loaded_db, "SELECT count(*) FROM orders").iloc[0, 0] > 0


class RejectingBroker(SimulatedBroker):
    """The simulator, refusing every order for one ticker (as a broker refuses an order for
    buying power or a halted symbol)."""

    def __init__(self, *args, refuse: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.refuse = refuse

    def submit(self, orders, *, run_id=None):
        from quantorch.brokers import OrderAck

        kept = [o for o in orders if o.ticker != self.refuse]
        acks = {a.client_order_id: a for a in super().submit(kept, run_id=run_id)}
        return [acks.get(o.client_order_id) or OrderAck(
            o.client_order_id, "rejected", reason=f"HTTP 403: {o.ticker} is not tradable")
            for o in orders]


def test_a_rejected_order_is_recorded_and_the_rest_trade(loaded_db):
    hold = {"backtest.strategy": "buy-and-hold"}  # one order per stock at the first session
    plain = trader(loaded_db, **hold)
    broker = RejectingBroker(plain.store, "acct", plain.costs, refuse="AAPL")
    paper_trader = trader(loaded_db, broker=broker, **hold)
    paper_trader.run(dt.date(2021, 3, 1))
    paper_trader.run(dt.date(2021, 3, 2))
    orders = rows(loaded_db, "SELECT ticker, status, reason, filled_quantity FROM orders "
                             "ORDER BY ticker")
    aapl = orders[orders["ticker"] == "AAPL"].iloc[0]
    assert aapl["status"] == "rejected" and "not tradable" in aapl["reason"]
    assert aapl["filled_quantity"] == 0
    assert (orders.loc[orders["ticker"] != "AAPL", "status"] == "filled").all()
    fills = rows(loaded_db, "SELECT ticker FROM broker_fills")["ticker"]
    assert len(fills) == 19 and "AAPL" not in set(fills)
    assert reconcile(trader(loaded_db, **hold)).differences == []


class DriftingBroker(SimulatedBroker):
    """The simulator as a broker whose account someone traded by hand: it reports more AAPL
    than the ledger holds (and is reconciled like a real broker)."""

    keeps_ledger = False

    def __init__(self, *args, extra: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra = extra

    def shares(self):
        held = super().shares()
        if self.extra:
            held["AAPL"] = held.get("AAPL", 0.0) + self.extra
        return held

    def cash(self):  # a real broker never paid the decisions' bills (paid outside it)
        with self.store.connect(read_only=True) as con:
            return super().cash() + repository.decision_costs_paid(con, self.account)


def test_a_broker_ledger_mismatch_halts_the_account_until_reconciled(loaded_db):
    plain = trader(loaded_db)
    broker = DriftingBroker(plain.store, "acct", plain.costs, extra=0.0)
    trader(loaded_db, broker=broker).run(dt.date(2021, 3, 1))
    broker.extra = 5.0
    with pytest.raises(ReconciliationError, match="AAPL ledger .* broker"):
        trader(loaded_db, broker=broker).run(dt.date(2021, 3, 2))
    account = rows(loaded_db, "SELECT halted_reason FROM paper_accounts").iloc[0, 0]
    assert "broker and ledger differ: AAPL" in account
    with pytest.raises(ReconciliationError, match="is halted"):
        trader(loaded_db, broker=broker).run(dt.date(2021, 3, 3))
    assert rows(loaded_db, "SELECT max(session) AS s FROM cycles WHERE status = 'done'"
                ).iloc[0, 0] == pd.Timestamp("2021-03-01")
    # reconcile shows the difference and changes nothing while it lasts
    result = reconcile(trader(loaded_db, broker=broker))
    assert [c for c, _ in result.differences] == ["broker"] and not result.resumed
    # the trader sells the stray shares at the broker: reconcile lifts the halt
    broker.extra = 0.0
    result = reconcile(trader(loaded_db, broker=broker))
    assert result.differences == [] and result.resumed
    outcomes = trader(loaded_db, broker=broker).run(dt.date(2021, 3, 3))
    assert [o.status for o in outcomes] == ["done", "done"]  # 03-02 completed, then 03-03


def test_reconcile_through_the_cli(loaded_db):
    assert paper(loaded_db, "replay", "--start", "2021-03-01", "--end", "2021-03-10").exit_code == 0
    result = paper(loaded_db, "reconcile", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["reconciled"] and payload["differences"] == []
    assert payload["account"]["cash"] == pytest.approx(
        rows(loaded_db, "SELECT sum(amount) FROM cash_ledger").iloc[0, 0])
    # a tampered positions snapshot is found, named, and left alone
    con = duckdb.connect(str(loaded_db))
    con.execute("UPDATE positions SET quantity = quantity + 1 WHERE ticker = 'MSFT' AND "
                "session = DATE '2021-03-10'")
    con.close()
    result = paper(loaded_db, "reconcile")
    assert result.exit_code == 2
    assert "positions" in result.stdout and "MSFT at 2021-03-10" in result.stdout


def test_every_paper_command_speaks_json_with_the_account(loaded_db):
    assert paper(loaded_db, "run-once", "--asof", "2021-03-01").exit_code == 0
    for command in (["status"], ["history"], ["reconcile"], ["stop"],
                    ["run-once", "--asof", "2021-03-01"]):
        result = paper(loaded_db, *command, "--account", "paper", "--json")
        assert result.exit_code == 0, (command, result.stderr)
        payload = json.loads(result.stdout)
        account = payload["account"]
        assert {"cash", "positions", "equity"} <= account.keys(), command
        assert len(account["positions"]) == 0  # decided at 03-01's close, filled 03-02


def test_status_html_report(loaded_db, tmp_path):
    assert paper(loaded_db, "replay", "--start", "2021-03-01", "--end", "2021-03-31").exit_code == 0
    target = tmp_path / "out" / "acct.html"
    result = paper(loaded_db, "status", "--html", "--output", str(target), "--json")
    assert result.exit_code == 0, result.stderr
    html = target.read_text()
    for heading in ("Account", "Positions", "Orders", "Last decisions", "Equity", "Tools",
                    "Trades", "S&amp;P 500 price index"):
        assert heading in html
    assert (target.parent / "plotly-7.1.0.min.js").exists() or any(
        p.name.startswith("plotly") for p in target.parent.iterdir())


class FlakyBroker(SimulatedBroker):
    """The simulator, down for the first ``down`` submissions (as a broker API answering 503
    past the retries)."""

    def __init__(self, *args, down: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.down = down

    def submit(self, orders, *, run_id=None):
        from quantorch.errors import RetryableError

        if self.down:
            self.down -= 1
            raise RetryableError("the broker did not answer (HTTP 503 after 3 retries)")
        return super().submit(orders, run_id=run_id)


def test_a_cycle_failing_after_its_decision_resumes_without_deciding_again(loaded_db):
    from quantorch.errors import RetryableError

    plain = trader(loaded_db)
    broker = FlakyBroker(plain.store, "acct", plain.costs, down=1)
    with pytest.raises(RetryableError, match="HTTP 503"):
        trader(loaded_db, broker=broker).run(dt.date(2021, 3, 1))
    cycle = rows(loaded_db, "SELECT status, resume_step, message FROM cycles")
    assert cycle.values.tolist() == [["failed", "decided",
                                      "will retry: the broker did not answer (HTTP 503 after 3 "
                                      "retries)"]]
    decisions = rows(loaded_db, "SELECT count(*) FROM decisions").iloc[0, 0]
    intents = rows(loaded_db, "SELECT client_order_id, status FROM orders ORDER BY 1")
    assert decisions > 0 and (intents["status"] == "intent").all() and len(intents) > 0
    outcome = trader(loaded_db, broker=broker).run(dt.date(2021, 3, 1))[-1]
    assert outcome.status == "done" and outcome.resumed_from == "decided"
    assert rows(loaded_db, "SELECT count(*) FROM decisions").iloc[0, 0] == decisions
    sent = rows(loaded_db, "SELECT client_order_id, status FROM orders ORDER BY 1")
    assert sent["client_order_id"].tolist() == intents["client_order_id"].tolist()
    assert (sent["status"] == "submitted").all()
