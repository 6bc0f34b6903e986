"""What a paper account holds and how it has done, read from the store (read-only).

:func:`account_status` is what ``quantorch paper status`` prints (and ``--json`` writes): cash,
positions, equity and P&L against the benchmark, the last and the next cycle, the kill switch,
the broker, tool cost to date. :func:`cycle_history` is ``paper history``;
:func:`write_status_report` the ``--html`` tear sheet. Nothing here writes to the database.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quantorch.backtest.metrics import performance_metrics
from quantorch.paper.cycle import account_run_id, check_account
from quantorch.store import Store, repository

__all__ = ["account_status", "cycle_history", "status_report_data", "write_status_report"]


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _equity(con, account: str) -> pd.DataFrame:
    return con.execute(
        "SELECT date, equity, cash, gross_exposure, benchmark_equity FROM equity "
        "WHERE run_id = ? ORDER BY date", [account_run_id(account)],
    ).df()


def account_status(store: Store, account: str, *, schedule: dict | None = None) -> dict:
    """Everything ``paper status`` shows for ``account``, as plain JSON values.

    Parameters
    ----------
    store
        The database (opened read-only, one short unit of work).
    account
        The paper account; an unknown one is one clear error listing those there are.
    schedule
        :func:`quantorch.paper.scheduler.status` of the database's job store, when known: the
        trader's PID and the next cycle.
    """
    row = check_account(store, account)
    with store.connect(read_only=True) as con:
        cash = repository.cash_balance(con, account)
        equity = _equity(con, account)
        cycles = repository.cycles_of(con, account)
        last_session = equity["date"].iloc[-1] if len(equity) else None
        positions = (repository.positions_at(con, account, last_session)
                     if last_session is not None else pd.DataFrame())
        orders = con.execute(
            "SELECT status, count(*) AS n FROM orders WHERE account = ? GROUP BY status",
            [account]).fetchall()
        traded = con.execute(
            "SELECT notional, fees, coalesce(slippage_cost, 0) AS slippage_cost FROM "
            "broker_fills WHERE account = ?", [account]).df()
        tools = con.execute(
            "SELECT count(*), coalesce(sum(cost_usd), 0) FROM tool_calls WHERE run_id IN "
            "(SELECT run_id FROM cycles WHERE account = ?)", [account],
        ).fetchone()
        decisions = con.execute(
            "SELECT count(*) FROM decisions WHERE run_id IN "
            "(SELECT run_id FROM cycles WHERE account = ?)", [account],
        ).fetchone()[0]
    initial = float(row["initial_cash"])
    last_equity = _finite(equity["equity"].iloc[-1]) if len(equity) else None
    curve = pd.Series(equity["equity"].to_numpy(), index=pd.to_datetime(equity["date"]))
    metrics = ({k: _finite(v) for k, v in performance_metrics(curve, traded).items()}
               if len(curve) else {})
    bench = equity["benchmark_equity"].dropna() if len(equity) else pd.Series(dtype=float)
    bench_return = (float(bench.iloc[-1] / bench.iloc[0] - 1.0) if len(bench) > 1 else None)
    peak = _finite(row["peak_equity"])
    last_cycle = None
    if len(cycles):
        last = cycles.sort_values(["session", "updated_at"]).iloc[-1]
        last_cycle = {
            "session": pd.Timestamp(last["session"]).date().isoformat(),
            "status": str(last["status"]),
            "message": None if pd.isna(last["message"]) else str(last["message"]),
            "updated_at": pd.Timestamp(last["updated_at"]).isoformat(),
        }
    counts = {str(status): int(n) for status, n in orders}
    next_cycle = _next_cycle(schedule, account)
    return {
        "account": account,
        "profile": row["profile"],
        "strategy": row["strategy"],
        "broker": row["broker"],
        "source": row["source"],
        "universe": list(row["universe"]),
        "rebalance": row["rebalance"],
        "benchmark": row["benchmark"],
        "first_session": row["first_session"].isoformat(),
        "as_of": (pd.Timestamp(last_session).date().isoformat() if last_session is not None
                  else None),
        "initial_cash": initial,
        "cash": cash,
        "equity": last_equity,
        "pnl": None if last_equity is None else last_equity - initial,
        "total_return": None if last_equity is None else last_equity / initial - 1.0,
        "benchmark_return": bench_return,
        "metrics": metrics,
        "positions": [
            {"ticker": str(p.ticker), "quantity": float(p.quantity),
             "market_price": _finite(p.market_price), "market_value": _finite(p.market_value),
             "weight": (_finite(p.market_value) / last_equity
                        if last_equity and _finite(p.market_value) is not None else None)}
            for p in positions.itertuples(index=False)
        ],
        "orders": counts,
        # orders the broker may still fill (a partly filled DAY order has ended)
        "open_orders": sum(counts.get(s, 0) for s in ("intent", "submitted", "accepted")),
        "fills": len(traded),
        "fees_paid": float(traded["fees"].sum()),
        "slippage_paid": float(traded["slippage_cost"].sum()),
        "traded_notional": float(traded["notional"].sum()),
        "decisions": int(decisions),
        "tool_calls": int(tools[0]),
        "tool_cost_usd": float(tools[1]),
        "kill_switch": {
            "peak_equity": peak,
            "drawdown": (None if peak is None or last_equity is None or peak <= 0
                         else last_equity / peak - 1.0),
            "cooldown_until": (row["cooldown_until"].isoformat() if row["cooldown_until"]
                               else None),
            "state": "flat until " + row["cooldown_until"].isoformat() if row["cooldown_until"]
                     else "armed",
        },
        "halted": row["halted_reason"],
        "cycles": len(cycles),
        "last_cycle": last_cycle,
        "scheduler": None if schedule is None else {
            "running": bool(schedule.get("running")), "pid": schedule.get("pid"),
        },
        "next_cycle": next_cycle,
    }


def _next_cycle(schedule: dict | None, account: str) -> dict | None:
    """The next cycle as the job store has it, else as the XNYS calendar gives it."""
    from quantorch.paper import schedule as timing

    fire, session = None, None
    if schedule is not None and schedule.get("job_id") and schedule.get("next_fire_time"):
        fire, session = schedule["next_fire_time"], schedule.get("next_session")
    else:
        planned = timing.next_cycle(dt.datetime.now(dt.UTC))
        if planned is not None:
            session, fire = planned
    if fire is None:
        return None
    return {
        "session": pd.Timestamp(session).date().isoformat() if session is not None else None,
        "at_utc": pd.Timestamp(fire).tz_convert("UTC").isoformat(),
        "scheduled": bool(schedule and schedule.get("running") and schedule.get("next_fire_time")),
    }


def cycle_history(store: Store, account: str, *, last: int | None = None) -> pd.DataFrame:
    """The account's cycles, oldest first (``last``: only the most recent ones)."""
    check_account(store, account)
    with store.connect(read_only=True) as con:
        cycles = con.execute(
            "SELECT c.session, c.status, c.profile, c.broker, c.started_at, c.finished_at, "
            "c.message, (SELECT count(*) FROM orders o WHERE o.account = c.account AND "
            "o.decision_session = c.session) AS orders, (SELECT count(*) FROM broker_fills f "
            "WHERE f.account = c.account AND f.fill_session = c.session) AS fills, e.equity "
            "FROM cycles c LEFT JOIN equity e ON e.run_id = ? AND e.date = c.session "
            "WHERE c.account = ? ORDER BY c.session", [account_run_id(account), account],
        ).df()
    return cycles.tail(last) if last else cycles


def status_report_data(store: Store, account: str, status: dict):
    """The tear sheet of the account (:class:`~quantorch.backtest.report.ReportData`), with
    its positions, orders and last decisions as extra sections."""
    from quantorch.backtest.report import Comparison, ReportData
    from quantorch.backtest.runner import tool_usage
    from quantorch.data.providers import benchmark_label

    with store.connect(read_only=True) as con:
        equity = _equity(con, account)
        fills = con.execute(
            "SELECT decision_session AS decision_date, fill_session AS fill_date, ticker, side, "
            "quantity, fill_price, notional, fees, coalesce(slippage_cost, 0) AS slippage_cost "
            "FROM broker_fills WHERE account = ? ORDER BY fill_session, ticker", [account],
        ).df()
        orders = con.execute(
            "SELECT decision_session, ticker, side, quantity, filled_quantity, status, reason, "
            "client_order_id FROM orders WHERE account = ? ORDER BY decision_session DESC, "
            "ticker LIMIT 200", [account],
        ).df()
        runs = [r[0] for r in con.execute(
            "SELECT run_id FROM cycles WHERE account = ? ORDER BY session", [account]).fetchall()]
        decisions = con.execute(
            "SELECT * FROM decisions WHERE run_id IN (SELECT unnest(?)) ORDER BY decision_date, "
            "decision_id", [runs]).df()
        tool_calls = con.execute(
            "SELECT run_id, tool, provider, ticker, as_of, cost_usd, cache_hit FROM tool_calls "
            "WHERE run_id IN (SELECT unnest(?))", [runs]).df()
    index = pd.to_datetime(equity["date"])
    curve = pd.Series(equity["equity"].to_numpy(), index=index, name="equity")
    cash = pd.Series(equity["cash"].to_numpy(), index=index)
    comparisons = []
    bench = pd.Series(equity["benchmark_equity"].to_numpy(), index=index).dropna()
    if len(bench) and status["benchmark"]:
        scaled = bench / bench.iloc[0] * float(curve.iloc[0])
        comparisons.append(Comparison("benchmark", benchmark_label(status["benchmark"]), scaled,
                                      performance_metrics(scaled)))
    engine_fills = fills.assign(fill_date=pd.to_datetime(fills["fill_date"]),
                                decision_date=pd.to_datetime(fills["decision_date"]))
    tools = None
    if len(decisions):
        tools = tool_usage(decisions, tool_calls, engine_fills, curve)
    extra = [
        ("account", "Account", _account_html(status)),
        ("positions", "Positions", _positions_html(status)),
        ("orders", "Orders", _orders_html(orders)),
        ("decisions", "Last decisions", _decisions_html(decisions)),
    ]
    meta = {
        "Account": account, "Profile": status["profile"], "Strategy": status["strategy"],
        "Broker": status["broker"], "Source": status["source"],
        "Universe": f"{len(status['universe'])} tickers", "Rebalance": status["rebalance"],
        "Opened": status["first_session"], "As of": status["as_of"] or "no cycle yet",
    }
    return ReportData(
        title=f"quantorch paper account {account}", meta=meta, equity=curve, cash=cash,
        weights=pd.DataFrame(index=index), metrics=performance_metrics(curve, engine_fills),
        comparisons=comparisons, fills=engine_fills, tools=tools,
        tool_calls=tool_calls if len(tool_calls) else None, extra_sections=extra,
    )


def write_status_report(store: Store, account: str, status: dict, path: Path) -> Path:
    """Write the account's HTML tear sheet to ``path`` (atomically)."""
    from quantorch.backtest.report import write_report

    return write_report(Path(path), status_report_data(store, account, status))


def _table(header, rows) -> str:
    from quantorch.backtest.report import html_escape, html_table

    return html_table([html_escape(h) for h in header],
                      [[html_escape(c) for c in row] for row in rows])


def _note(text: str) -> str:
    from quantorch.backtest.report import html_escape, html_note

    return html_note(html_escape(text))


def _money(value: Any, signed: bool = False) -> str:
    number = _finite(value)
    if number is None:
        return "n/a"
    return f"{number:+,.2f}" if signed else f"{number:,.2f}"


def _pct(value: Any) -> str:
    number = _finite(value)
    return "n/a" if number is None else f"{number:+.2%}"


def _account_html(status: dict) -> str:
    kill = status["kill_switch"]
    nxt = status["next_cycle"]
    last = status["last_cycle"]
    rows = [
        ["Equity (USD)", _money(status["equity"])],
        ["Cash (USD)", _money(status["cash"])],
        ["P&L since opening (USD)", _money(status["pnl"], signed=True)],
        ["Return since opening", _pct(status["total_return"])],
        ["Benchmark return, same sessions", _pct(status["benchmark_return"])],
        ["Kill switch", kill["state"]],
        ["Drawdown from peak", _pct(kill["drawdown"])],
        ["Fees and slippage paid (USD)", _money(status["fees_paid"] + status["slippage_paid"])],
        ["Tool calls / cost to date (USD)",
         f"{status['tool_calls']:,} / {status['tool_cost_usd']:,.4f}"],
        ["Last cycle", f"{last['session']} {last['status']}" if last else "none yet"],
        ["Next cycle (UTC)", f"{nxt['session']} at {nxt['at_utc']}" if nxt else "n/a"],
    ]
    parts = [_table(["", ""], rows)]
    if status["halted"]:
        parts.insert(0, _note(f"Trading is halted: {status['halted']}"))
    return "\n".join(parts)


def _positions_html(status: dict) -> str:
    if not status["positions"]:
        return _note("No positions: the account is all cash.")
    rows = [[p["ticker"], f"{p['quantity']:,.4f}", _money(p["market_price"]),
             _money(p["market_value"]), _pct(p["weight"]).lstrip("+")]
            for p in sorted(status["positions"], key=lambda p: -(p["market_value"] or 0))]
    return _table(["ticker", "shares", "price", "value (USD)", "weight"], rows)


def _orders_html(orders: pd.DataFrame) -> str:
    if orders.empty:
        return _note("No orders yet.")
    rows = [[str(pd.Timestamp(o.decision_session).date()), o.ticker, o.side,
             f"{o.quantity:,.4f}", f"{o.filled_quantity:,.4f}", o.status,
             "" if pd.isna(o.reason) else str(o.reason)]
            for o in orders.itertuples(index=False)]
    return (_note("The latest 200 orders, newest first; each carries its deterministic client "
                 "order id (account, session, ticker).")
            + _table(["decided", "ticker", "side", "shares", "filled", "status", "reason"], rows))


def _decisions_html(decisions: pd.DataFrame) -> str:
    if decisions.empty:
        return _note("No decisions yet (rule strategies decide without tools).")
    last = decisions[decisions["decision_date"] == decisions["decision_date"].max()]
    rows = [[d.ticker, ", ".join(d.tools_called) or "none", f"{d.tool_cost_usd:,.4f}",
             f"{d.proposed_position:+.2f}", f"{d.target_weight:+.2%}",
             "" if pd.isna(d.guard_note) else str(d.guard_note)]
            for d in last.itertuples(index=False)]
    when = pd.Timestamp(last["decision_date"].iloc[0]).date()
    return (_note(f"Decisions at the {when} close, with the tools each one called.")
            + _table(["ticker", "tools used", "cost (USD)", "proposed", "target weight",
                     "RiskGuard"], rows))
