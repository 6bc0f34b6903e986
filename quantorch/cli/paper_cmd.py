"""``quantorch paper ...``: scheduled paper trading through the decision kernel.

Thin commands over :mod:`quantorch.paper`: ``start`` (the scheduler, a cycle after every NYSE
close), ``run-once`` (one cycle now or for a past session), ``replay`` (a cycle per session over
history, offline), ``status``, ``history``, ``reconcile`` and ``stop``. Every command takes
``--account`` and ``--json`` (one object on stdout, always with the account's cash, positions
and equity under ``"account"``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from quantorch.cli._common import (
    BarProgress,
    ConfigOpt,
    DbOpt,
    DebugOpt,
    JsonOpt,
    compact_table,
    err,
    error_line,
    guard,
    load,
    new_app,
    open_store,
    out,
    parse_date,
)
from quantorch.errors import UserInputError

__all__ = ["paper_app"]

paper_app = new_app(
    "Paper trading: the orchestrator decides after every NYSE close, orders go to a simulated "
    "broker (or Alpaca's paper API), everything is stored and survives a crash. Start with "
    "`quantorch paper replay --start 2022-01 --end 2022-06` (offline), then `paper start`."
)

AccountOpt = Annotated[
    Optional[str],
    typer.Option("--account", metavar="NAME", show_default=False,
                 help="Paper account [default: the config's paper.account, 'paper']. Accounts "
                      "in one database never touch each other."),
]
AccountsOpt = Annotated[
    Optional[list[str]],
    typer.Option("--account", metavar="NAME", show_default=False,
                 help="Paper account to trade; repeat for several (one scheduler runs them one "
                      "after the other) [default: the config's paper.account, 'paper']."),
]
PaperProfileOpt = Annotated[
    Optional[str],
    typer.Option("--profile", metavar="NAME", show_default=False,
                 help="Trader profile of a new account (a shipped name or a YAML file) "
                      "[default: the config's paper.profile, else neutral]. An existing account "
                      "keeps the profile it was opened with; another one is refused."),
]
PaperOrchestratorOpt = Annotated[
    Optional[str],
    typer.Option("--orchestrator", metavar="NAME", show_default=False,
                 help="Orchestrator of a new account: policy (the trained PPO router), "
                      "all-tools, free-tools, technical-only, or llm (a chat model at the "
                      "config's llm.base_url) [default: the config's orchestrator.name]. An "
                      "existing account keeps the one it was opened with."),
]
BrokerOpt = Annotated[
    Optional[str],
    typer.Option("--broker", metavar="NAME", show_default=False,
                 help="sim (built in: fills at the next open with the backtest's fee and "
                      "slippage) or alpaca (paper API; keys in APCA_API_KEY_ID and "
                      "APCA_API_SECRET_KEY) [default: the config's paper.broker, sim]."),
]


# ---- shared -----------------------------------------------------------------------------------


def _config(config: Path | None, broker: str | None = None):
    if broker is not None and broker not in ("sim", "alpaca"):
        raise UserInputError(f"unknown broker '{broker}' for --broker: use sim or alpaca")
    return load(config, {"paper.broker": broker})


def _trader(cfg, store, account: str | None, *, profile=None, broker=None, orchestrator=None,
            progress=None):
    from quantorch.paper.cycle import paper_trader
    from quantorch.progress import SILENT

    if orchestrator is not None:
        from quantorch.orchestrator import check_orchestrator_name

        check_orchestrator_name(orchestrator)
    return paper_trader(cfg, store, account or cfg.paper.account, profile=profile,
                        broker=broker, orchestrator=orchestrator, progress=progress or SILENT)


def _schedule(store) -> dict | None:
    from quantorch.paper.scheduler import jobs_path_for, status

    return status(jobs_path_for(store.path))


def _status(store, account: str) -> dict:
    from quantorch.paper.status import account_status

    schedule = _schedule(store)
    if schedule is not None:
        from quantorch.paper.scheduler import status

        schedule = status(schedule["job_store"], account)
    return account_status(store, account, schedule=schedule)


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, default=_json_default, allow_nan=False) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _money(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+,.2f}" if signed else f"{value:,.2f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2%}"


def _print_outcomes(outcomes) -> None:
    table = compact_table()
    for column in ("session", "cycle", "orders", "fills", "equity $", "note"):
        table.add_column(column, justify="left" if column in ("session", "cycle", "note")
                         else "right")
    for o in outcomes:
        table.add_row(str(o.session), o.status + (" (decided)" if o.decided else ""),
                      str(o.orders), str(o.fills), _money(o.equity if o.equity == o.equity
                                                          else None),
                      o.message or (f"resumed after {o.resumed_from}" if o.resumed_from else ""))
    out.print(table)


def _print_status(status: dict) -> None:
    head = compact_table(f"paper account {status['account']} ({status['profile']}, "
                         f"{status['strategy']}, broker {status['broker']})")
    head.show_header = False
    head.add_column("", no_wrap=True)
    head.add_column("", justify="right")
    kill = status["kill_switch"]
    last, nxt = status["last_cycle"], status["next_cycle"]
    scheduler = status["scheduler"] or {}
    rows = [
        ("as of", status["as_of"] or "no cycle yet"),
        ("equity $", _money(status["equity"])),
        ("cash $", _money(status["cash"])),
        ("P&L since opening $", _money(status["pnl"], signed=True)),
        ("return since opening", _pct(status["total_return"])),
        (f"benchmark {status['benchmark'] or '-'} same sessions", _pct(status["benchmark_return"])),
        ("kill switch", f"{kill['state']}, drawdown {_pct(kill['drawdown'])}"),
        ("fees + slippage $", _money(status["fees_paid"] + status["slippage_paid"])),
        ("tool calls / cost $", f"{status['tool_calls']:,} / {status['tool_cost_usd']:,.4f}"),
        ("open orders", str(status["open_orders"])),
        ("last cycle", f"{last['session']} {last['status']}" if last else "none yet"),
        ("next cycle (UTC)", (f"{nxt['session']} at {nxt['at_utc'][11:16]}"
                              + ("" if nxt["scheduled"] else " (scheduler not running)"))
                             if nxt else "n/a"),
        ("scheduler", f"running, PID {scheduler['pid']}" if scheduler.get("running")
                      else "not running"),
    ]
    for key, value in rows:
        head.add_row(key, value)
    out.print(head)
    if status["halted"]:
        error_line(f"trading is halted: {status['halted']} (see `quantorch paper reconcile`)",
                   prefix="warning: ", style="yellow")
    if status["positions"]:
        table = compact_table("positions at the last close")
        for column in ("ticker", "shares", "price $", "value $", "weight"):
            table.add_column(column, justify="left" if column == "ticker" else "right")
        for p in sorted(status["positions"], key=lambda p: -(p["market_value"] or 0)):
            table.add_row(p["ticker"], f"{p['quantity']:,.4f}", _money(p["market_price"]),
                          _money(p["market_value"]),
                          "n/a" if p["weight"] is None else f"{p['weight']:.2%}")
        out.print(table)
    else:
        out.print("no positions: the account is all cash", style="dim")


# ---- commands ---------------------------------------------------------------------------------


@paper_app.command("run-once")
def run_once(
    account: AccountOpt = None,
    profile: PaperProfileOpt = None,
    broker: BrokerOpt = None,
    orchestrator: PaperOrchestratorOpt = None,
    asof: Annotated[
        Optional[str],
        typer.Option("--asof", metavar="DATE", show_default=False,
                     help="Run the cycle of this session (YYYY-MM-DD) [default: the session "
                          "that closed last]. Cycles run forward: an earlier session than the "
                          "last cycle is refused."),
    ] = None,
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Run one paper cycle now: refresh prices, settle the last orders, decide, send orders.

    A session that ran already does nothing; sessions missed since the last cycle are caught up
    first (settled and recorded, no decision). A holiday or weekend is reported and skipped.
    """
    with guard(debug):
        from quantorch.data import calendar

        cfg = _config(config, broker)
        day = parse_date(asof, flag="--asof") if asof else calendar.last_completed_session()
        store = open_store(cfg, db)
        trader = _trader(cfg, store, account, profile=profile, broker=broker,
                         orchestrator=orchestrator)
        outcomes = trader.run(day)
        status = _status(store, trader.account) if _has_account(store, trader.account) else None
        if json_output:
            _emit({"command": "run-once", "cycles": [o.to_json() for o in outcomes],
                   "account": status})
            return
        if outcomes[-1].status == "skipped":
            out.print(outcomes[-1].message)
            return
        _print_outcomes(outcomes)
        if status is not None:
            _print_status(status)


def _has_account(store, account: str) -> bool:
    if not store.exists:
        return False
    from quantorch.store import repository

    with store.connect(read_only=True) as con:
        return repository.account(con, account) is not None


@paper_app.command("replay")
def replay(
    start: Annotated[str, typer.Option("--start", metavar="DATE",
                                       help="First session: YYYY, YYYY-MM or YYYY-MM-DD.")],
    end: Annotated[str, typer.Option("--end", metavar="DATE",
                                     help="Last session: YYYY, YYYY-MM or YYYY-MM-DD.")],
    account: AccountOpt = None,
    profile: PaperProfileOpt = None,
    orchestrator: PaperOrchestratorOpt = None,
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Replay history as paper trading: one cycle per session with a simulated clock, offline.

    Uses the simulated broker, so it reproduces `quantorch backtest` over the same period fill
    for fill. Interrupted (even killed), it resumes where it stopped when run again.
    """
    with guard(debug):
        first, last = parse_date(start), parse_date(end, is_end=True)
        if last < first:
            raise UserInputError(f"--end {last} is before --start {first}")
        cfg = _config(config)
        if cfg.paper.broker != "sim":
            raise UserInputError("a replay trades the simulated broker (its clock is history's): "
                                 "set paper.broker to sim, or use `paper start` for Alpaca")
        store = open_store(cfg, db)
        with BarProgress() as progress:
            trader = _trader(cfg, store, account, profile=profile, broker="sim",
                             orchestrator=orchestrator,
                             progress=progress)
            outcomes = trader.replay(first, last)
        status = _status(store, trader.account)
        if json_output:
            _emit({"command": "replay", "sessions": len(outcomes),
                   "decided": sum(o.decided for o in outcomes),
                   "already_done": sum(o.status == "already done" for o in outcomes),
                   "account": status})
            return
        ran = [o for o in outcomes if o.status != "already done"]
        out.print(f"replayed {len(outcomes)} sessions {first}..{last} for account "
                  f"{trader.account}: {len(ran)} cycles run now, "
                  f"{len(outcomes) - len(ran)} done already")
        _print_status(status)


@paper_app.command("status")
def status_cmd(
    account: AccountOpt = None,
    html: Annotated[bool, typer.Option(
        "--html", help="Also write the account's HTML report (equity against the benchmark, "
                       "positions, orders and fills, tool cost, the last decisions).")] = False,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", metavar="FILE", show_default=False,
        help="Where --html writes [default: REPORTS_DIR/paper-ACCOUNT.html].")] = None,
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Show an account: positions, cash, equity and P&L against the benchmark, the last and
    next cycle, the kill switch, the broker. Read-only; works while the scheduler runs."""
    with guard(debug):
        cfg = _config(config)
        store = open_store(cfg, db)
        name = account or cfg.paper.account
        status = _status(store, name)
        report = None
        if html:
            from quantorch.paper.status import write_status_report

            target = output or Path(cfg.reports_dir) / f"paper-{name}.html"
            if target.suffix.lower() in (".duckdb", ".ddb", ".wal"):
                raise UserInputError(f"--output {target} looks like a database: write the "
                                     "report to an .html file")
            report = write_status_report(store, name, status, target).resolve()
        if json_output:
            _emit({"command": "status", "report": str(report) if report else None,
                   "account": status})
            return
        _print_status(status)
        if report is not None:
            out.print(f"report: {report}")


@paper_app.command("history")
def history(
    account: AccountOpt = None,
    last: Annotated[Optional[int], typer.Option(
        "--last", metavar="N", min=1, show_default=False,
        help="Show only the N most recent cycles [default: all].")] = None,
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """List an account's cycles with their status (done, missed, failed and why)."""
    with guard(debug):
        from quantorch.paper.status import cycle_history

        cfg = _config(config)
        store = open_store(cfg, db)
        name = account or cfg.paper.account
        cycles = cycle_history(store, name, last=last)
        if json_output:
            rows = json.loads(cycles.to_json(orient="records", date_format="iso"))
            _emit({"command": "history", "cycles": rows, "account": _status(store, name)})
            return
        table = compact_table(f"cycles of paper account {name}")
        for column in ("session", "status", "orders", "fills", "equity $", "message"):
            table.add_column(column, justify="left" if column in ("session", "status", "message")
                             else "right")
        for c in cycles.itertuples(index=False):
            table.add_row(str(c.session)[:10], c.status, str(c.orders), str(c.fills),
                          _money(None if c.equity != c.equity else c.equity),
                          "" if c.message is None or c.message != c.message else str(c.message))
        out.print(table)
        if cycles.empty:
            out.print("no cycles yet", style="dim")


@paper_app.command("reconcile")
def reconcile_cmd(
    account: AccountOpt = None,
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Compare the broker's positions and cash with the ledger, and the ledger with itself.

    Shows every difference. When there is none, a halted account trades again. When there are
    some, nothing is changed: fix the account at the broker (or open a new account), then run
    this again. Exit 2 while differences remain.
    """
    with guard(debug):
        from quantorch.paper.reconcile import reconcile

        cfg = _config(config)
        store = open_store(cfg, db)
        name = account or cfg.paper.account
        trader = _trader(cfg, store, name)
        result = reconcile(trader)
        if json_output:
            _emit({"command": "reconcile", **result.to_json(), "account": _status(store, name)})
        else:
            if result.differences:
                table = compact_table(f"differences for paper account {name}")
                table.add_column("check", no_wrap=True)
                table.add_column("difference")
                for check, text in result.differences:
                    table.add_row(check, text)
                out.print(table)
            out.print(result.message)
        if result.differences:
            raise typer.Exit(2)


@paper_app.command("start")
def start(
    account: AccountsOpt = None,
    profile: PaperProfileOpt = None,
    broker: BrokerOpt = None,
    orchestrator: PaperOrchestratorOpt = None,
    detach: Annotated[bool, typer.Option(
        "--detach", help="Run in the background (log: DB.paper.log next to the database); "
                         "`quantorch paper stop` stops it.")] = False,
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Run the paper trader: a cycle after each NYSE session's close (early closes and
    holidays from the exchange calendar), until stopped with Ctrl-C or `quantorch paper stop`.

    A cycle that fell due while it was down runs once at start (within the config's
    misfire_grace_minutes); older ones are caught up by the next cycle (settled, no decision).
    One paper trader per database: a second start is refused with the first one's PID.
    """
    with guard(debug):
        cfg = _config(config, broker)
        store = open_store(cfg, db)
        names = list(dict.fromkeys(account or [cfg.paper.account]))
        specs = []
        for name in names:  # every check a cycle would make, before anything starts
            trader = _trader(cfg, store, name, profile=profile, broker=broker,
                             orchestrator=orchestrator)
            row = trader.check()
            specs.append({"account": name, "profile": profile, "broker": broker,
                          "orchestrator": orchestrator, "new": row is None})
        if detach:
            _detach(names, profile, broker, orchestrator, config, store, json_output)
            return
        _foreground(cfg, store, specs, config, json_output, debug)


def _job_kwargs(specs, config: Path | None, store) -> dict:
    return {
        "config_path": str(Path(config).resolve()) if config else None,
        "db_path": str(store.path.resolve()),
        "accounts": [{k: s[k] for k in ("account", "profile", "broker", "orchestrator")}
                     for s in specs],
    }


def _foreground(cfg, store, specs, config, json_output: bool, debug: bool) -> None:
    from quantorch.paper.scheduler import PaperScheduler, jobs_path_for

    def log(line: str) -> None:
        from quantorch.redact import redact

        stamp = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        err.print(f"{stamp} {redact(line)}", highlight=False, markup=False)

    import logging

    # APScheduler logs a failed job with its traceback; the log line above says it in one
    # line (with secrets redacted), so its own logger only speaks with --debug
    if not debug:
        logging.getLogger("apscheduler").setLevel(logging.CRITICAL)
    label = "+".join(s["account"] for s in specs)
    scheduler = PaperScheduler(
        jobs_path_for(store.path), account=label,
        job="quantorch.paper.cycle:run_scheduled_cycle",
        job_kwargs=_job_kwargs(specs, config, store),
        offset=dt.timedelta(minutes=cfg.paper.cycle_offset_minutes),
        grace=dt.timedelta(minutes=cfg.paper.misfire_grace_minutes),
        on_missed=lambda session: None,  # the next cycle catches missed sessions up
        log=log,
    )
    scheduler.run()
    if json_output:
        accounts = [_status(store, s["account"]) if _has_account(store, s["account"]) else None
                    for s in specs]
        _emit({"command": "start", "stopped": True,
               "account": accounts[0] if len(accounts) == 1 else None,
               "accounts": accounts})


def _detach(names, profile, broker, orchestrator, config, store, json_output: bool) -> None:
    from quantorch.paper.scheduler import jobs_path_for, status

    log_path = store.path.with_name(store.path.name + ".paper.log")
    argv = [sys.executable, "-m", "quantorch", "paper", "start", "--db", str(store.path)]
    for name in names:
        argv += ["--account", name]
    if profile:
        argv += ["--profile", profile]
    if broker:
        argv += ["--broker", broker]
    if orchestrator:
        argv += ["--orchestrator", orchestrator]
    if config:
        argv += ["--config", str(Path(config).resolve())]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                 stderr=log_file, start_new_session=True, close_fds=True,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
    jobs = jobs_path_for(store.path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = status(jobs)
        if state["running"] and state["pid"] == child.pid and state["jobs"]:
            break
        code = child.poll()
        if code is not None:
            lines = log_path.read_text(errors="replace").strip().splitlines()
            raise UserInputError(f"the paper trader stopped at once (exit {code}): "
                                 f"{lines[-1] if lines else 'see ' + str(log_path)}")
        time.sleep(0.2)
    else:
        raise UserInputError(f"the paper trader (PID {child.pid}) did not start within 60 s: "
                             f"see {log_path}")
    if json_output:
        accounts = [_status(store, n) if _has_account(store, n) else None for n in names]
        _emit({"command": "start", "pid": child.pid, "log": str(log_path),
               "account": accounts[0] if len(accounts) == 1 else None, "accounts": accounts})
        return
    out.print(f"paper trader started in the background (PID {child.pid}) for "
              f"{', '.join(names)}; log: {log_path}; stop it with `quantorch paper stop`")


@paper_app.command("stop")
def stop_cmd(
    account: AccountOpt = None,
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Stop the paper trader of this database (a running cycle finishes first)."""
    with guard(debug):
        from quantorch.paper.scheduler import jobs_path_for, status, stop

        cfg = _config(config)
        store = open_store(cfg, db)
        jobs = jobs_path_for(store.path)
        if account is not None:
            state = status(jobs, account)
            if state["running"] and state["job_id"] is None:
                raise UserInputError(
                    f"the paper trader running for this database (PID {state['pid']}) does not "
                    f"trade account '{account}': `quantorch paper stop` without --account stops it")
        result = stop(jobs)
        name = account or cfg.paper.account
        if json_output:
            _emit({"command": "stop", "stopped": result.stopped, "pid": result.pid,
                   "message": result.message,
                   "account": _status(store, name) if _has_account(store, name) else None})
            return
        out.print(result.message)
