"""Schema migrations of the quantorch DuckDB file.

Each migration is applied once, in order, inside one transaction, and recorded in
``schema_version``. Never edit a released migration: append a new one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


_V1 = (
    """
    CREATE TABLE prices (
        ticker     VARCHAR NOT NULL,
        date       DATE    NOT NULL,
        source     VARCHAR NOT NULL,
        open       DOUBLE,
        high       DOUBLE,
        low        DOUBLE,
        close      DOUBLE  NOT NULL,
        adj_close  DOUBLE  NOT NULL,
        volume     DOUBLE,
        PRIMARY KEY (ticker, date, source)
    )
    """,
    "COMMENT ON TABLE prices IS 'Daily bars, one row per ticker, session date and source; "
    "unadjusted OHLC plus the split-and-dividend adjusted close'",
    "COMMENT ON COLUMN prices.date IS 'XNYS session date (the bar closes at 16:00 New York)'",
    "COMMENT ON COLUMN prices.source IS 'provider that produced the row: sample, yfinance, file'",
    "COMMENT ON COLUMN prices.close IS 'close as traded (equal to adj_close where the source "
    "ships only adjusted prices)'",
    "COMMENT ON COLUMN prices.adj_close IS 'close adjusted for splits and dividends (USD)'",
    "COMMENT ON COLUMN prices.volume IS 'shares traded; NULL where the source has no volume'",
    """
    CREATE TABLE price_coverage (
        ticker      VARCHAR   NOT NULL,
        source      VARCHAR   NOT NULL,
        first_date  DATE      NOT NULL,
        last_date   DATE      NOT NULL,
        fetched_at  TIMESTAMP NOT NULL,
        PRIMARY KEY (ticker, source)
    )
    """,
    "COMMENT ON TABLE price_coverage IS 'Date range already fetched per ticker and source: "
    "a fetch inside it makes no request'",
    """
    CREATE TABLE runs (
        run_id             VARCHAR PRIMARY KEY,
        kind               VARCHAR   NOT NULL,
        created_at         TIMESTAMP NOT NULL,
        strategy           VARCHAR   NOT NULL,
        source             VARCHAR   NOT NULL,
        universe           VARCHAR[] NOT NULL,
        benchmark          VARCHAR,
        start_date         DATE      NOT NULL,
        end_date           DATE      NOT NULL,
        rebalance          VARCHAR   NOT NULL,
        seed               INTEGER   NOT NULL,
        config_hash        VARCHAR   NOT NULL,
        config             JSON      NOT NULL,
        code_version       VARCHAR   NOT NULL,
        metrics            JSON      NOT NULL,
        benchmark_metrics  JSON,
        report_path        VARCHAR
    )
    """,
    "COMMENT ON TABLE runs IS 'One row per backtest, training, evaluation or paper session'",
    "COMMENT ON COLUMN runs.kind IS 'backtest | train | evaluate | paper'",
    "COMMENT ON COLUMN runs.config_hash IS 'hash of every setting that changes the result'",
    "COMMENT ON COLUMN runs.code_version IS 'quantorch version and git commit that produced it'",
    "COMMENT ON COLUMN runs.metrics IS 'strategy metrics as JSON; returns as fractions'",
    "COMMENT ON COLUMN runs.benchmark_metrics IS 'the same metrics for the benchmark'",
    """
    CREATE TABLE equity (
        run_id            VARCHAR NOT NULL,
        date              DATE    NOT NULL,
        equity            DOUBLE  NOT NULL,
        cash              DOUBLE  NOT NULL,
        gross_exposure    DOUBLE  NOT NULL,
        benchmark_equity  DOUBLE,
        PRIMARY KEY (run_id, date)
    )
    """,
    "COMMENT ON TABLE equity IS 'Daily portfolio value of a run, marked at the close (USD)'",
    "COMMENT ON COLUMN equity.gross_exposure IS 'sum of |position value| / equity'",
    "COMMENT ON COLUMN equity.benchmark_equity IS 'benchmark rebased to the initial cash'",
    """
    CREATE TABLE fills (
        run_id         VARCHAR NOT NULL,
        fill_id        INTEGER NOT NULL,
        decision_date  DATE    NOT NULL,
        fill_date      DATE    NOT NULL,
        ticker         VARCHAR NOT NULL,
        side           VARCHAR NOT NULL,
        quantity       DOUBLE  NOT NULL,
        fill_price     DOUBLE  NOT NULL,
        notional       DOUBLE  NOT NULL,
        fees           DOUBLE  NOT NULL,
        slippage_cost  DOUBLE  NOT NULL,
        PRIMARY KEY (run_id, fill_id)
    )
    """,
    "COMMENT ON TABLE fills IS 'Executed orders of a run: decided at a close, filled at the next "
    "session'",
    "COMMENT ON COLUMN fills.fill_price IS 'price paid or received, slippage included "
    "(adjusted USD)'",
    "COMMENT ON COLUMN fills.slippage_cost IS 'USD lost to slippage against the reference price'",
)

_V2 = (
    """
    CREATE TABLE fundamentals (
        ticker      VARCHAR NOT NULL,
        period_end  DATE    NOT NULL,
        filed_at    DATE    NOT NULL,
        metric      VARCHAR NOT NULL,
        value       DOUBLE  NOT NULL,
        source      VARCHAR NOT NULL,
        PRIMARY KEY (ticker, period_end, metric, source)
    )
    """,
    "COMMENT ON TABLE fundamentals IS 'Point-in-time statement items: usable only from filed_at'",
    "COMMENT ON COLUMN fundamentals.filed_at IS 'date the filing became public (availability)'",
    "COMMENT ON COLUMN fundamentals.metric IS 'item name, e.g. net_income_q, total_assets, "
    "equity (USD)'",
    """
    CREATE TABLE news (
        news_id       VARCHAR   NOT NULL PRIMARY KEY,
        published_at  TIMESTAMP NOT NULL,
        ticker        VARCHAR   NOT NULL,
        headline      VARCHAR   NOT NULL,
        body          VARCHAR,
        source        VARCHAR   NOT NULL
    )
    """,
    "COMMENT ON TABLE news IS 'News and social posts per ticker; only items published before a "
    "decision count for it'",
    "COMMENT ON COLUMN news.published_at IS 'publication time, UTC'",
    "COMMENT ON COLUMN news.news_id IS 'hash of (ticker, published_at, headline, source)'",
    """
    CREATE TABLE tool_calls (
        call_id        VARCHAR   NOT NULL PRIMARY KEY,
        run_id         VARCHAR,
        tool           VARCHAR   NOT NULL,
        provider       VARCHAR   NOT NULL,
        ticker         VARCHAR   NOT NULL,
        as_of          TIMESTAMP NOT NULL,
        arguments      JSON      NOT NULL,
        outputs        JSON      NOT NULL,
        summary        VARCHAR,
        coverage       BOOLEAN   NOT NULL,
        cost_usd       DOUBLE    NOT NULL,
        latency_ms     DOUBLE    NOT NULL,
        cache_hit      BOOLEAN   NOT NULL,
        error          VARCHAR,
        input_tokens   INTEGER,
        output_tokens  INTEGER,
        created_at     TIMESTAMP NOT NULL
    )
    """,
    "COMMENT ON TABLE tool_calls IS 'Every analysis tool call: what was asked, what came back, "
    "what it cost'",
    "COMMENT ON COLUMN tool_calls.as_of IS 'decision time the call was made for (UTC); the tool "
    "saw only data available then'",
    "COMMENT ON COLUMN tool_calls.outputs IS 'numeric features returned, as JSON'",
    "COMMENT ON COLUMN tool_calls.cost_usd IS 'price charged for the call (0 on a cache hit)'",
    "COMMENT ON COLUMN tool_calls.latency_ms IS 'wall time of the call in milliseconds'",
    "COMMENT ON COLUMN tool_calls.error IS 'why the call failed; NULL when it succeeded'",
    """
    CREATE TABLE tool_cache (
        cache_key   VARCHAR   NOT NULL PRIMARY KEY,
        tool        VARCHAR   NOT NULL,
        provider    VARCHAR   NOT NULL,
        payload     JSON      NOT NULL,
        created_at  TIMESTAMP NOT NULL
    )
    """,
    "COMMENT ON TABLE tool_cache IS 'Results of deterministic tool calls and LLM prompts, keyed "
    "by a hash of tool, provider, version and inputs'",
)

_V3 = (
    """
    CREATE TABLE decisions (
        run_id             VARCHAR   NOT NULL,
        decision_id        INTEGER   NOT NULL,
        orchestrator       VARCHAR   NOT NULL,
        profile            VARCHAR   NOT NULL,
        ticker             VARCHAR   NOT NULL,
        decision_date      DATE      NOT NULL,
        fill_date          DATE,
        horizon            INTEGER   NOT NULL,
        tools_called       VARCHAR[] NOT NULL,
        n_calls            INTEGER   NOT NULL,
        tool_cost_usd      DOUBLE    NOT NULL,
        proposed_position  DOUBLE    NOT NULL,
        target_weight      DOUBLE    NOT NULL,
        guard_note         VARCHAR,
        rationale          VARCHAR,
        reward             DOUBLE,
        PRIMARY KEY (run_id, decision_id)
    )
    """,
    "COMMENT ON TABLE decisions IS 'One row per orchestrator decision (ticker, decision date): "
    "tools called, their cost, the position proposed and what the RiskGuard let through'",
    "COMMENT ON COLUMN decisions.decision_date IS 'session whose close the decision was taken at'",
    "COMMENT ON COLUMN decisions.fill_date IS 'next session, when the resulting order filled'",
    "COMMENT ON COLUMN decisions.horizon IS 'sessions over which the reward was measured'",
    "COMMENT ON COLUMN decisions.tools_called IS 'tool:provider pairs called, in call order'",
    "COMMENT ON COLUMN decisions.proposed_position IS 'orchestrator output in [-1, 1], a "
    "fraction of the profile max position'",
    "COMMENT ON COLUMN decisions.target_weight IS 'weight of equity after the RiskGuard'",
    "COMMENT ON COLUMN decisions.guard_note IS 'which RiskGuard limit changed the position, if any'",
)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _documented_view(
    name: str, sql: str, description: str, columns: dict[str, str], *, replace: bool = False
) -> tuple[str, ...]:
    """CREATE VIEW plus COMMENT ON VIEW and one COMMENT ON COLUMN per documented column."""
    create = "CREATE OR REPLACE VIEW" if replace else "CREATE VIEW"
    return (
        f"{create} {name} AS {sql}",
        f"COMMENT ON VIEW {name} IS {_quote(description)}",
        *(f"COMMENT ON COLUMN {name}.{col} IS {_quote(text)}" for col, text in columns.items()),
    )


def _json_doubles(column: str, keys: tuple[str, ...], prefix: str = "") -> str:
    """``TRY_CAST(column->>'$.key' AS DOUBLE) AS prefix_key`` for each key (NULL if absent)."""
    return ",\n    ".join(
        f"TRY_CAST(json_extract_string({column}, '$.{key}') AS DOUBLE) AS {prefix}{key}"
        for key in keys
    )


# The profile of a run, one row per run id found in runs or decisions: the one profile of its
# decisions; 'mixed' when they span several; else the top-level `profile` key of its config (a
# name, or an object with a `name`); else 'none'. `orchestrator.profile` is not read: every
# config carries it (default 'neutral'), plain strategies included.
_RUN_PROFILES = """
    SELECT coalesce(r.run_id, d.run_id) AS run_id,
           coalesce(
               CASE WHEN d.n_profiles = 1 THEN d.profile WHEN d.n_profiles > 1 THEN 'mixed' END,
               CASE WHEN json_type(r.config, '$.profile') = 'OBJECT'
                    THEN json_extract_string(r.config, '$.profile.name')
                    ELSE json_extract_string(r.config, '$.profile') END,
               'none') AS profile
    FROM runs AS r
    FULL JOIN (
        SELECT run_id, min(profile) AS profile, count(DISTINCT profile) AS n_profiles
        FROM decisions
        GROUP BY run_id
    ) AS d ON d.run_id = r.run_id
"""


_METRIC_KEYS = (
    "total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown", "calmar",
    "turnover", "exposure", "fees_paid", "slippage_paid",
)  # fmt: skip
_BENCHMARK_METRIC_KEYS = (
    "total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown", "calmar",
)  # fmt: skip

_V_RUNS = f"""
WITH run_profile AS ({_RUN_PROFILES})
SELECT
    run_id, kind, created_at, strategy, p.profile, source, universe,
    len(universe) AS n_tickers, benchmark, start_date, end_date,
    (end_date - start_date) / 365.25 AS years, rebalance, seed,
    TRY_CAST(json_extract_string(config, '$.costs.fee_bps') AS DOUBLE) AS fee_bps,
    TRY_CAST(json_extract_string(config, '$.costs.slippage_bps') AS DOUBLE) AS slippage_bps,
    TRY_CAST(json_extract_string(config, '$.backtest.initial_cash') AS DOUBLE) AS initial_cash,
    {_json_doubles("metrics", _METRIC_KEYS)},
    {_json_doubles("benchmark_metrics", _BENCHMARK_METRIC_KEYS, prefix="benchmark_")},
    TRY_CAST(json_extract_string(metrics, '$.total_return') AS DOUBLE)
      - TRY_CAST(json_extract_string(benchmark_metrics, '$.total_return') AS DOUBLE)
      AS excess_return,
    config_hash, code_version, config, metrics, benchmark_metrics, report_path
FROM runs
LEFT JOIN run_profile AS p USING (run_id)
"""

_V_EQUITY = """
SELECT
    run_id, date, session, equity, cash, gross_exposure, daily_return,
    equity / first_equity - 1 AS cumulative_return,
    peak_equity, equity / peak_equity - 1 AS drawdown,
    benchmark_equity, benchmark_daily_return,
    benchmark_equity / benchmark_peak - 1 AS benchmark_drawdown,
    daily_return - benchmark_daily_return AS active_return
FROM (
    SELECT
        run_id, date, equity, cash, gross_exposure, benchmark_equity,
        row_number() OVER w AS session,
        equity / lag(equity) OVER w - 1 AS daily_return,
        first_value(equity) OVER w AS first_equity,
        max(equity) OVER w AS peak_equity,
        benchmark_equity / lag(benchmark_equity) OVER w - 1 AS benchmark_daily_return,
        max(benchmark_equity) OVER w AS benchmark_peak
    FROM (
        -- a run without a benchmark may store NaN: treat it as missing
        SELECT run_id, date, equity, cash, gross_exposure,
               nullif(benchmark_equity, 'NaN'::DOUBLE) AS benchmark_equity
        FROM equity
    )
    WINDOW w AS (PARTITION BY run_id ORDER BY date
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
"""

_V_TOOL_USAGE = f"""
WITH run_profile AS ({_RUN_PROFILES})
SELECT
    u.run_id, coalesce(p.profile, 'none') AS profile, u.tool, u.provider, u.month,
    u.calls, u.cache_hits, u.errors, u.no_coverage, u.cost_usd,
    u.latency_p50_ms, u.latency_mean_ms, u.latency_max_ms, u.input_tokens, u.output_tokens
FROM (
    -- aggregate first, then attach the profile (a function of the run): 10x fewer join rows
    SELECT
        run_id, tool, provider,
        CAST(date_trunc('month', as_of) AS DATE) AS month,
        count(*) AS calls,
        CAST(count_if(cache_hit) AS BIGINT) AS cache_hits,
        count(error) AS errors,
        CAST(count_if(NOT coverage) AS BIGINT) AS no_coverage,
        sum(cost_usd) AS cost_usd,
        quantile_cont(latency_ms, 0.5) AS latency_p50_ms,
        avg(latency_ms) AS latency_mean_ms,
        max(latency_ms) AS latency_max_ms,
        sum(input_tokens) AS input_tokens,
        sum(output_tokens) AS output_tokens
    FROM tool_calls
    GROUP BY run_id, tool, provider, month
) AS u
LEFT JOIN run_profile AS p ON p.run_id = u.run_id
"""

_V_DECISIONS = """
WITH sessions AS (
    SELECT source, ticker, date, adj_close,
           row_number() OVER (PARTITION BY source, ticker ORDER BY date) AS session
    FROM prices
),
decided AS (
    SELECT d.*, r.source,
           list_sort(list_distinct([split_part(t, ':', 1) for t in d.tools_called])) AS tools
    FROM decisions AS d
    LEFT JOIN runs AS r USING (run_id)
)
SELECT
    d.run_id, d.decision_id, d.orchestrator, d.profile, d.ticker, d.decision_date, d.fill_date,
    d.horizon, d.tools_called, d.tools,
    CASE WHEN len(d.tools) = 0 THEN 'none' ELSE array_to_string(d.tools, '+') END AS tool_set,
    d.n_calls, d.tool_cost_usd, d.proposed_position, d.target_weight, d.guard_note,
    d.rationale, d.reward, d.source,
    entry.adj_close AS entry_price,
    exit.date AS exit_date,
    exit.adj_close AS exit_price,
    exit.adj_close / entry.adj_close - 1 AS forward_return,
    d.target_weight * (exit.adj_close / entry.adj_close - 1) AS contribution,
    d.target_weight * (exit.adj_close / entry.adj_close - 1) * e.equity AS pnl_usd
FROM decided AS d
LEFT JOIN equity AS e ON e.run_id = d.run_id AND e.date = d.decision_date
LEFT JOIN sessions AS entry
       ON entry.source = d.source AND entry.ticker = d.ticker AND entry.date = d.fill_date
LEFT JOIN sessions AS exit
       ON exit.source = entry.source AND exit.ticker = entry.ticker
      AND exit.session = entry.session + d.horizon
"""

_V_PNL_ATTRIBUTION = """
SELECT
    run_id, orchestrator, profile, tool_set, tool, n_tools,
    count(*) AS decisions,
    count(contribution) AS realised_decisions,
    sum(contribution / n_tools) AS contribution,
    sum(contribution / n_tools) * 1e4 AS contribution_bps,
    sum(pnl_usd / n_tools) AS pnl_usd,
    sum(tool_cost_usd / n_tools) AS tool_cost_usd,
    avg(forward_return) AS mean_forward_return,
    avg(CASE WHEN target_weight <> 0 AND forward_return IS NOT NULL
             THEN CAST(sign(target_weight) = sign(forward_return) AS INTEGER) END) AS hit_rate
FROM (
    SELECT run_id, orchestrator, profile, tool_set, target_weight, forward_return,
           contribution, pnl_usd, tool_cost_usd,
           greatest(len(tools), 1) AS n_tools,
           unnest(CASE WHEN len(tools) = 0 THEN ['none'] ELSE tools END) AS tool
    FROM v_decisions
)
GROUP BY run_id, orchestrator, profile, tool_set, tool, n_tools
"""

# Descriptions for the columns migrations 1-3 left undocumented, so `quantorch query --schema`
# and docs/schema.md describe every column. COMMENT ON changes no data.
_COLUMN_COMMENTS = {
    "prices": {
        "ticker": "ticker as the source spells it, e.g. AAPL, ^GSPC",
        "open": "open as traded; NULL where the source has close only",
        "high": "high as traded; NULL where the source has close only",
        "low": "low as traded; NULL where the source has close only",
    },
    "price_coverage": {
        "ticker": "ticker fetched",
        "source": "provider fetched from",
        "first_date": "first session requested and stored",
        "last_date": "last session requested and stored",
        "fetched_at": "when the range was last fetched (UTC)",
    },
    "runs": {
        "run_id": "unique id: bt- (backtest) or the kind's prefix, UTC time and a random suffix",
        "created_at": "when the run was stored (UTC)",
        "strategy": "strategy or orchestrator that decided, e.g. buy-and-hold, sma-cross, policy",
        "source": "price source the run read (prices.source)",
        "universe": "tickers traded",
        "benchmark": "benchmark ticker; NULL when disabled",
        "start_date": "first session of the run",
        "end_date": "last session of the run",
        "rebalance": "daily | weekly | monthly",
        "seed": "random seed",
        "config": "the whole configuration, as JSON",
        "report_path": "HTML report written for the run",
    },
    "equity": {
        "run_id": "the run (runs.run_id)",
        "date": "session date",
        "equity": "cash + positions at the close (USD)",
        "cash": "cash at the close (USD)",
    },
    "fills": {
        "run_id": "the run (runs.run_id)",
        "fill_id": "0, 1, ... in fill order within the run",
        "decision_date": "session whose close decided the order",
        "fill_date": "session the order filled",
        "ticker": "ticker traded",
        "side": "buy | sell",
        "quantity": "shares traded (positive)",
        "notional": "quantity x fill_price (USD)",
        "fees": "commission charged (USD)",
    },
    "fundamentals": {
        "ticker": "company ticker",
        "period_end": "last day of the fiscal period reported",
        "value": "the item's value (USD unless the metric says otherwise)",
        "source": "provider: sec, yfinance, file, factor",
    },
    "news": {
        "ticker": "ticker the item is about",
        "headline": "headline or post text",
        "body": "full text where available",
        "source": "feed or file the item came from",
    },
    "tool_calls": {
        "call_id": "unique id of the call",
        "run_id": "the run that made it; NULL for a call outside a run (quantorch tools run)",
        "tool": "tool name, e.g. technical, fundamental, sentiment, risk",
        "provider": "provider (variant) of the tool that answered",
        "ticker": "ticker the call was about",
        "arguments": "arguments besides ticker and as_of, as JSON",
        "summary": "short text summary for LLMs",
        "coverage": "the tool had data for the ticker at as_of",
        "cache_hit": "answered from tool_cache",
        "input_tokens": "LLM prompt tokens; NULL for other providers",
        "output_tokens": "LLM completion tokens; NULL for other providers",
        "created_at": "when the call was made (UTC wall time)",
    },
    "tool_cache": {
        "cache_key": "hash of tool, provider, version and inputs",
        "tool": "tool name",
        "provider": "provider name",
        "payload": "the cached result, as JSON",
        "created_at": "when it was cached (UTC)",
    },
    "decisions": {
        "run_id": "the run (runs.run_id)",
        "decision_id": "0, 1, ... within the run",
        "orchestrator": "policy, all-tools, free-tools, technical-only, random, buy-and-hold, llm",
        "profile": "trader profile the decision was taken for",
        "ticker": "ticker decided",
        "n_calls": "number of tool calls made",
        "tool_cost_usd": "what the calls were billed, debited from cash at the decision (USD): "
                         "each call with data and each failed call (its provider was invoked); "
                         "a call without data is free",
        "rationale": "the LLM's explanation; NULL for other orchestrators",
        "reward": "reward of the decision after the horizon; NULL until known",
    },
    "schema_version": {
        "version": "migration number",
        "description": "what the migration added",
        "applied_at": "when it was applied to this file (UTC)",
    },
}

_V_RUNS_DOCS = {
    "profile": "the one profile of the run's decisions ('mixed' if several), else the "
               "config's top-level `profile`, else 'none'",
    "n_tickers": "number of tickers in the universe",
    "years": "calendar years from start_date to end_date",
    "fee_bps": "commission from the config, bps of traded notional",
    "slippage_bps": "slippage from the config, bps of the fill price",
    "initial_cash": "starting cash from the config (USD)",
    "total_return": "strategy total return over the period (fraction)",
    "cagr": "compound annual growth rate (fraction)",
    "volatility": "annualised volatility of daily returns (fraction)",
    "sharpe": "annualised Sharpe ratio (risk-free rate 0)",
    "sortino": "annualised Sortino ratio",
    "max_drawdown": "worst peak-to-trough fall (negative fraction)",
    "calmar": "cagr / |max_drawdown|",
    "turnover": "traded notional per year / mean equity",
    "exposure": "mean gross exposure",
    "fees_paid": "commissions paid (USD)",
    "slippage_paid": "slippage paid (USD)",
    **{f"benchmark_{k}": f"{k} of the benchmark" for k in _BENCHMARK_METRIC_KEYS},
    "excess_return": "total_return - benchmark_total_return",
}

_V_EQUITY_DOCS = {
    "session": "1 for the first session of the run, then 2, 3, ...",
    "daily_return": "equity / previous session equity - 1; NULL on the first session",
    "cumulative_return": "equity / first session equity - 1",
    "peak_equity": "highest equity up to and including this session",
    "drawdown": "equity / peak_equity - 1 (0 at a new high, negative below it)",
    "benchmark_equity": "benchmark rebased to the initial cash; NULL without a benchmark",
    "benchmark_daily_return": "benchmark daily return",
    "benchmark_drawdown": "benchmark drawdown from its running peak",
    "active_return": "daily_return - benchmark_daily_return",
}

_V4 = (
    *(
        f"COMMENT ON COLUMN {table}.{column} IS {_quote(text)}"
        for table, columns in _COLUMN_COMMENTS.items()
        for column, text in columns.items()
    ),
    *_documented_view(
        "v_runs",
        _V_RUNS,
        "Runs with their config, period and metrics flattened to columns (returns as fractions)",
        _V_RUNS_DOCS,
    ),
    *_documented_view(
        "v_equity",
        _V_EQUITY,
        "Daily equity of each run with daily return, cumulative return and drawdown, and the "
        "same for its benchmark",
        _V_EQUITY_DOCS,
    ),
    *_documented_view(
        "v_tool_usage",
        _V_TOOL_USAGE,
        "Tool calls aggregated by run, profile, tool, provider and month of the decision time: "
        "calls, cache hits, errors, cost and latency",
        {
            "profile": "the run's profile, as in v_runs ('none' for calls outside a run)",
            "month": "first day of the month of as_of (decision time, not billing time)",
            "calls": "number of calls",
            "cache_hits": "calls answered from the cache (cost 0)",
            "errors": "calls that failed (error not NULL)",
            "no_coverage": "calls where the tool had no data for the ticker",
            "cost_usd": "total price charged (USD)",
            "latency_p50_ms": "median wall time of a call in the group (ms)",
            "latency_mean_ms": "mean wall time of a call in the group (ms)",
            "latency_max_ms": "slowest call in the group (ms)",
            "input_tokens": "LLM prompt tokens of the group; NULL for other providers",
            "output_tokens": "LLM completion tokens of the group; NULL for other providers",
        },
    ),
    *_documented_view(
        "v_decisions",
        _V_DECISIONS,
        "Decisions with their realised forward return: adj_close of the fill session to "
        "adj_close `horizon` sessions later, from the run's price source",
        {
            "tools": "distinct tool names called (providers dropped), sorted",
            "tool_set": "tools joined with '+', e.g. 'risk+technical'; 'none' if no tool",
            "source": "price source of the run (runs.source); NULL when the run is not stored",
            "entry_price": "adj_close on fill_date",
            "exit_date": "session `horizon` sessions after fill_date in the ticker's prices",
            "exit_price": "adj_close on exit_date",
            "forward_return": "exit_price / entry_price - 1; NULL until the horizon has passed",
            "contribution": "target_weight * forward_return: the decision's realised "
                            "contribution to return, a fraction of equity",
            "pnl_usd": "contribution x the run's equity at the decision's close (USD); NULL "
                       "when the run stored no equity that day",
        },
    ),
    *_documented_view(
        "v_pnl_attribution",
        _V_PNL_ATTRIBUTION,
        "Realised contribution (target_weight x forward_return) by tool: a decision that used "
        "k tools gives each 1/k of its contribution and tool cost; decisions without tools go "
        "to tool 'none'",
        {
            "tool_set": "all tools the decisions used, joined with '+'",
            "tool": "one tool of the set (or 'none'); rows of a set sum to the set's total",
            "n_tools": "number of tools in the set (the split factor k)",
            "decisions": "decisions with this tool set (each counted on every tool row of the "
                         "set: sum decisions / n_tools for a count)",
            "realised_decisions": "of those, decisions whose horizon has passed",
            "contribution": "sum of contribution / n_tools (fraction of equity)",
            "contribution_bps": "contribution in basis points",
            "pnl_usd": "sum of pnl_usd / n_tools (USD)",
            "tool_cost_usd": "sum of tool_cost_usd / n_tools (USD)",
            "mean_forward_return": "mean forward return of the decisions",
            "hit_rate": "share of non-zero positions whose sign matched the forward return",
        },
    ),
)

# ---- migration 5: an honest comparison beside the index ----------------------------------------
# The sample's S&P 500 series is a price index (no dividends) while the stocks are total-return
# adjusted closes, so every run also stores the equal-weight buy-and-hold of its own universe
# (same engine, same costs) and says what its benchmark series is.

_V_RUNS_5 = f"""
WITH run_profile AS ({_RUN_PROFILES})
SELECT
    run_id, kind, created_at, strategy, p.profile, source, universe,
    len(universe) AS n_tickers, benchmark, benchmark_label, start_date, end_date,
    (end_date - start_date) / 365.25 AS years, rebalance, seed,
    TRY_CAST(json_extract_string(config, '$.costs.fee_bps') AS DOUBLE) AS fee_bps,
    TRY_CAST(json_extract_string(config, '$.costs.slippage_bps') AS DOUBLE) AS slippage_bps,
    TRY_CAST(json_extract_string(config, '$.backtest.initial_cash') AS DOUBLE) AS initial_cash,
    {_json_doubles("metrics", _METRIC_KEYS)},
    {_json_doubles("benchmark_metrics", _BENCHMARK_METRIC_KEYS, prefix="benchmark_")},
    {_json_doubles("equal_weight_metrics", _BENCHMARK_METRIC_KEYS, prefix="equal_weight_")},
    TRY_CAST(json_extract_string(metrics, '$.total_return') AS DOUBLE)
      - TRY_CAST(json_extract_string(benchmark_metrics, '$.total_return') AS DOUBLE)
      AS excess_return,
    TRY_CAST(json_extract_string(metrics, '$.total_return') AS DOUBLE)
      - TRY_CAST(json_extract_string(equal_weight_metrics, '$.total_return') AS DOUBLE)
      AS excess_return_vs_equal_weight,
    config_hash, code_version, config, metrics, benchmark_metrics, equal_weight_metrics,
    report_path
FROM runs
LEFT JOIN run_profile AS p USING (run_id)
"""

_V_EQUITY_5 = """
SELECT
    run_id, date, session, equity, cash, gross_exposure, daily_return,
    equity / first_equity - 1 AS cumulative_return,
    peak_equity, equity / peak_equity - 1 AS drawdown,
    benchmark_equity, benchmark_daily_return,
    benchmark_equity / benchmark_peak - 1 AS benchmark_drawdown,
    daily_return - benchmark_daily_return AS active_return,
    equal_weight_equity, equal_weight_daily_return,
    equal_weight_equity / equal_weight_peak - 1 AS equal_weight_drawdown,
    daily_return - equal_weight_daily_return AS active_return_vs_equal_weight
FROM (
    SELECT
        run_id, date, equity, cash, gross_exposure, benchmark_equity, equal_weight_equity,
        row_number() OVER w AS session,
        equity / lag(equity) OVER w - 1 AS daily_return,
        first_value(equity) OVER w AS first_equity,
        max(equity) OVER w AS peak_equity,
        benchmark_equity / lag(benchmark_equity) OVER w - 1 AS benchmark_daily_return,
        max(benchmark_equity) OVER w AS benchmark_peak,
        equal_weight_equity / lag(equal_weight_equity) OVER w - 1 AS equal_weight_daily_return,
        max(equal_weight_equity) OVER w AS equal_weight_peak
    FROM (
        -- a run without a benchmark may store NaN: treat it as missing
        SELECT run_id, date, equity, cash, gross_exposure,
               nullif(benchmark_equity, 'NaN'::DOUBLE) AS benchmark_equity,
               nullif(equal_weight_equity, 'NaN'::DOUBLE) AS equal_weight_equity
        FROM equity
    )
    WINDOW w AS (PARTITION BY run_id ORDER BY date
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
"""

_V5 = (
    "ALTER TABLE runs ADD COLUMN benchmark_label VARCHAR",
    "ALTER TABLE runs ADD COLUMN equal_weight_metrics JSON",
    "ALTER TABLE equity ADD COLUMN equal_weight_equity DOUBLE",
    "COMMENT ON COLUMN runs.benchmark_label IS 'what the benchmark series is, e.g. \"S&P 500 "
    "price index (excludes dividends)\"; NULL for runs stored before schema version 5'",
    "COMMENT ON COLUMN runs.equal_weight_metrics IS 'the same metrics for the equal-weight "
    "buy-and-hold of the run''s universe (bought at the first fill with the same costs, never "
    "rebalanced)'",
    "COMMENT ON COLUMN equity.equal_weight_equity IS 'equal-weight buy-and-hold of the run''s "
    "universe (same engine and costs, never rebalanced), from the initial cash; NULL for runs "
    "stored before schema version 5'",
    *_documented_view(
        "v_runs",
        _V_RUNS_5,
        "Runs with their config, period and metrics flattened to columns (returns as fractions)",
        {
            **_V_RUNS_DOCS,
            "benchmark_label": "what the benchmark series is (e.g. a price index without "
                               "dividends)",
            **{f"equal_weight_{k}": f"{k} of the equal-weight buy-and-hold of the universe"
               for k in _BENCHMARK_METRIC_KEYS},
            "excess_return_vs_equal_weight": "total_return - equal_weight_total_return",
        },
        replace=True,
    ),
    *_documented_view(
        "v_equity",
        _V_EQUITY_5,
        "Daily equity of each run with daily return, cumulative return and drawdown, and the "
        "same for its benchmark and for the equal-weight buy-and-hold of its universe",
        {
            **_V_EQUITY_DOCS,
            "equal_weight_daily_return": "equal-weight buy-and-hold daily return",
            "equal_weight_drawdown": "equal-weight buy-and-hold drawdown from its running peak",
            "active_return_vs_equal_weight": "daily_return - equal_weight_daily_return",
        },
        replace=True,
    ),
)

# ---- migration 6: what a broker was asked, what it did, and the account's book -----------------
# Storage for the kernel's values (orders, fills, positions, cash) so that a paper cycle can crash
# anywhere and restart without duplicating an order or losing a fill. Choices, all checked
# against DuckDB 2.0 (tests/unit/test_repository.py):
# - Broker fills get their own table keyed (account, broker_fill_id) rather than new columns on
#   `fills`. `fills` is keyed (run_id, fill_id INTEGER NOT NULL), so a broker fill there would
#   need an invented run and number; DuckDB cannot add a CHECK to an existing table, so a mixed
#   table could not require broker_fill_id on broker rows; and a UNIQUE index treats NULLs as
#   distinct, so (account, NULL) rows would never be deduplicated. A NOT NULL primary key says
#   "never stored twice" with no exception. Backtest fills stay in `fills`, untouched.
# - Vocabularies that may grow (order status, cash kind, cycle status) are checked by
#   quantorch.store.repository, not by CHECK constraints: DuckDB can neither add nor drop a CHECK
#   later, so a new status would mean rebuilding the table. Only invariants (side, positive
#   finite quantities) are CHECKs.
# - No FOREIGN KEYs: a broker may report a fill for an order placed outside quantorch, and
#   DuckDB forbids deleting or re-keying a referenced row.
# - Cash entries are idempotent by UNIQUE (account, broker_fill_id, kind) for a fill's cash and
#   UNIQUE (account, entry_key) for any other entry that must not repeat (an initial deposit, a
#   cycle's tool cost); NULLs are distinct in both, so entries without a key never collide.

_ORDER_STATUSES = (
    "intent", "submitted", "accepted", "partially_filled", "filled", "rejected", "cancelled",
    "expired",
)  # fmt: skip
_CASH_KINDS = ("deposit", "buy", "sell", "fee", "tool_cost", "llm_cost", "adjustment")
_CYCLE_STATUSES = (
    "started", "data_ready", "decided", "orders_submitted", "fills_recorded", "reconciled",
    "done", "failed", "missed",
)  # fmt: skip


def _documented_table(
    name: str, ddl: str, description: str, columns: dict[str, str]
) -> tuple[str, ...]:
    """CREATE TABLE plus COMMENT ON TABLE and one COMMENT ON COLUMN per column."""
    return (
        f"CREATE TABLE {name} ({ddl})",
        f"COMMENT ON TABLE {name} IS {_quote(description)}",
        *(f"COMMENT ON COLUMN {name}.{col} IS {_quote(text)}" for col, text in columns.items()),
    )


_V6 = (
    *_documented_table(
        "orders",
        """
        client_order_id   VARCHAR   PRIMARY KEY,
        account           VARCHAR   NOT NULL,
        run_id            VARCHAR,
        broker            VARCHAR   NOT NULL,
        ticker            VARCHAR   NOT NULL,
        side              VARCHAR   NOT NULL CHECK (side IN ('buy', 'sell')),
        quantity          DOUBLE    NOT NULL CHECK (isfinite(quantity) AND quantity > 0),
        target_weight     DOUBLE,
        reference_price   DOUBLE,
        decision_session  DATE      NOT NULL,
        status            VARCHAR   NOT NULL,
        broker_order_id   VARCHAR,
        filled_quantity   DOUBLE    NOT NULL DEFAULT 0,
        reason            VARCHAR,
        created_at        TIMESTAMP NOT NULL,
        updated_at        TIMESTAMP NOT NULL
        """,
        "One row per order a broker was asked to execute, from the intent written before it is "
        "sent to its final status; a restart finds it by its client order id and never sends "
        "it twice",
        {
            "client_order_id": "deterministic id from account, decision session, ticker and "
                               "sequence: the same decision always gives the same id",
            "account": "paper account name, or the run id for a backtest's simulated orders",
            "run_id": "the run or paper cycle that decided the order; NULL if unknown",
            "broker": "broker port that executes it: sim, alpaca, backtest",
            "ticker": "ticker to trade",
            "side": "buy | sell",
            "quantity": "shares ordered (positive; the side gives the direction)",
            "target_weight": "weight of equity the order moves the position to",
            "reference_price": "close the order was sized at (adjusted USD)",
            "decision_session": "session whose close decided the order",
            "status": "intent -> submitted -> accepted -> partially_filled -> filled | "
                      "rejected | cancelled | expired",
            "broker_order_id": "the broker's own id, once it accepted the order",
            "filled_quantity": "shares filled so far (the sum of its broker_fills)",
            "reason": "why it was rejected, cancelled or expired, as the broker said",
            "created_at": "when the intent was written (UTC)",
            "updated_at": "when the status last changed (UTC)",
        },
    ),
    *_documented_table(
        "broker_fills",
        """
        account           VARCHAR   NOT NULL,
        broker_fill_id    VARCHAR   NOT NULL,
        client_order_id   VARCHAR   NOT NULL,
        run_id            VARCHAR,
        ticker            VARCHAR   NOT NULL,
        side              VARCHAR   NOT NULL CHECK (side IN ('buy', 'sell')),
        quantity          DOUBLE    NOT NULL CHECK (isfinite(quantity) AND quantity > 0),
        fill_price        DOUBLE    NOT NULL CHECK (isfinite(fill_price) AND fill_price > 0),
        notional          DOUBLE    NOT NULL,
        fees              DOUBLE    NOT NULL,
        slippage_cost     DOUBLE,
        decision_session  DATE,
        fill_session      DATE      NOT NULL,
        recorded_at       TIMESTAMP NOT NULL,
        PRIMARY KEY (account, broker_fill_id)
        """,
        "Executions a broker reported for an account's orders, each stored once (keyed by the "
        "broker's fill id); a backtest's own fills are in `fills`",
        {
            "account": "the account (orders.account): a paper account or a backtest run id",
            "broker_fill_id": "the broker's id of the execution (the simulated broker derives "
                              "one from the order); a fill reported twice is stored once",
            "client_order_id": "the order filled (orders.client_order_id)",
            "run_id": "the run or paper cycle that recorded the fill; NULL if unknown",
            "ticker": "ticker traded",
            "side": "buy | sell",
            "quantity": "shares traded (positive)",
            "fill_price": "price paid or received, slippage included (USD)",
            "notional": "quantity x fill_price (USD)",
            "fees": "commission charged (USD)",
            "slippage_cost": "USD lost to slippage against the reference price; NULL where "
                             "the broker does not say",
            "decision_session": "session whose close decided the order",
            "fill_session": "session the order filled",
            "recorded_at": "when quantorch stored the fill (UTC)",
        },
    ),
    *_documented_table(
        "positions",
        """
        account       VARCHAR   NOT NULL,
        session       DATE      NOT NULL,
        ticker        VARCHAR   NOT NULL,
        quantity      DOUBLE    NOT NULL,
        market_price  DOUBLE,
        market_value  DOUBLE,
        recorded_at   TIMESTAMP NOT NULL,
        PRIMARY KEY (account, session, ticker)
        """,
        "Shares an account held at a session's close, one snapshot per (account, session): a "
        "ticker missing from a stored snapshot was not held",
        {
            "account": "the account (orders.account): a paper account or a backtest run id",
            "session": "session whose close the snapshot is at",
            "ticker": "ticker held",
            "quantity": "shares held (negative for a short)",
            "market_price": "close the position was marked at (USD)",
            "market_value": "quantity x market_price (USD)",
            "recorded_at": "when the snapshot was stored (UTC)",
        },
    ),
    *_documented_table(
        "cash_ledger",
        """
        account          VARCHAR   NOT NULL,
        entry_id         INTEGER   NOT NULL,
        session          DATE      NOT NULL,
        kind             VARCHAR   NOT NULL,
        amount           DOUBLE    NOT NULL CHECK (isfinite(amount)),
        client_order_id  VARCHAR,
        broker_fill_id   VARCHAR,
        entry_key        VARCHAR,
        note             VARCHAR,
        created_at       TIMESTAMP NOT NULL,
        PRIMARY KEY (account, entry_id),
        UNIQUE (account, broker_fill_id, kind),
        UNIQUE (account, entry_key)
        """,
        "Every cash movement of an account, signed (USD): the balance is their sum "
        "(v_account_cash); a fill's entries are stored once however often it is reported",
        {
            "account": "the account (orders.account): a paper account or a backtest run id",
            "entry_id": "1, 2, ... in the order the entries were written, per account",
            "session": "session the movement belongs to",
            "kind": "deposit | buy | sell | fee | tool_cost | llm_cost | adjustment",
            "amount": "signed USD: positive adds cash (deposit, sell), negative spends it (buy, "
                      "fee, tool_cost, llm_cost)",
            "client_order_id": "the order behind a buy, sell or fee entry",
            "broker_fill_id": "the fill behind a buy, sell or fee entry; one entry per (fill, "
                              "kind)",
            "entry_key": "idempotency key of an entry that is not a fill's, e.g. "
                         "'deposit:initial' or 'tool_cost:<profile>:<session>'; NULL for none",
            "note": "free text, e.g. what an adjustment corrects",
            "created_at": "when the entry was written (UTC)",
        },
    ),
    *_documented_table(
        "cycles",
        """
        account      VARCHAR   NOT NULL,
        profile      VARCHAR   NOT NULL,
        session      DATE      NOT NULL,
        status       VARCHAR   NOT NULL,
        run_id       VARCHAR,
        broker       VARCHAR,
        started_at   TIMESTAMP NOT NULL,
        updated_at   TIMESTAMP NOT NULL,
        finished_at  TIMESTAMP,
        message      VARCHAR,
        PRIMARY KEY (account, profile, session)
        """,
        "One paper-trading cycle per (account, profile, session) and how far it got: a "
        "restart resumes from its status instead of starting over",
        {
            "account": "paper account (orders.account)",
            "profile": "trader profile the cycle decided for",
            "session": "session whose close the cycle decides at",
            "status": "started | data_ready | decided | orders_submitted | fills_recorded | "
                      "reconciled | done | failed | missed",
            "run_id": "id of the cycle's decisions and tool calls (decisions.run_id)",
            "broker": "broker port used: sim, alpaca",
            "started_at": "when the cycle first started (UTC)",
            "updated_at": "when its status last changed (UTC)",
            "finished_at": "when it reached done, failed or missed (UTC); NULL while running",
            "message": "what happened at the last status, e.g. why it failed",
        },
    ),
    "COMMENT ON TABLE fills IS 'Executed orders of a backtest run: decided at a close, filled "
    "at the next session; a broker''s fills for an account are in broker_fills'",
    *_documented_view(
        "v_account_cash",
        """
        SELECT account,
               sum(amount) AS cash,
               coalesce(sum(amount) FILTER (WHERE kind = 'deposit'), 0) AS deposits,
               coalesce(sum(amount) FILTER (WHERE kind IN ('buy', 'sell')), 0) AS net_traded,
               coalesce(sum(amount) FILTER (WHERE kind = 'fee'), 0) AS fees,
               coalesce(sum(amount) FILTER (WHERE kind IN ('tool_cost', 'llm_cost')), 0)
                   AS tool_costs,
               coalesce(sum(amount) FILTER (WHERE kind = 'adjustment'), 0) AS adjustments,
               count(*) AS entries,
               max(session) AS last_session
        FROM cash_ledger
        GROUP BY account
        """,
        "Cash balance of each account: the sum of its cash_ledger entries, split by kind (USD, "
        "signed as in the ledger)",
        {
            "account": "the account (cash_ledger.account)",
            "cash": "balance: the sum of every entry (USD)",
            "deposits": "sum of deposits (USD)",
            "net_traded": "sum of buy and sell entries: negative when more was bought than "
                          "sold (USD)",
            "fees": "sum of fee entries (negative, USD)",
            "tool_costs": "sum of tool_cost and llm_cost entries (negative, USD)",
            "adjustments": "sum of adjustment entries (USD)",
            "entries": "number of ledger entries",
            "last_session": "latest session with an entry",
        },
    ),
)


# ---- migration 7: the decision kernel's provenance and one forward return -----------------------
# Decisions and tool calls say which executor answered them (panels or real calls), and
# v_decisions measures the forward return exactly as the decision dataset, the reward and the
# report do: from the fill (the adjusted open of the fill session where the source has opens,
# else its adjusted close) to the adjusted close `horizon` sessions after the fill session.

_V_DECISIONS_7 = """
WITH sessions AS (
    SELECT source, ticker, date, adj_close,
           coalesce(open * adj_close / nullif(close, 0), adj_close) AS fill_price,
           row_number() OVER (PARTITION BY source, ticker ORDER BY date) AS session
    FROM prices
),
decided AS (
    SELECT d.*, r.source,
           list_sort(list_distinct([split_part(t, ':', 1) for t in d.tools_called])) AS tools
    FROM decisions AS d
    LEFT JOIN runs AS r USING (run_id)
)
SELECT
    d.run_id, d.decision_id, d.orchestrator, d.profile, d.ticker, d.decision_date, d.fill_date,
    d.horizon, d.tools_called, d.tools,
    CASE WHEN len(d.tools) = 0 THEN 'none' ELSE array_to_string(d.tools, '+') END AS tool_set,
    d.n_calls, d.tool_cost_usd, d.proposed_position, d.target_weight, d.guard_note,
    d.rationale, d.reward, d.executor, d.source,
    entry.fill_price AS entry_price,
    exit.date AS exit_date,
    exit.adj_close AS exit_price,
    exit.adj_close / entry.fill_price - 1 AS forward_return,
    d.target_weight * (exit.adj_close / entry.fill_price - 1) AS contribution,
    d.target_weight * (exit.adj_close / entry.fill_price - 1) * e.equity AS pnl_usd
FROM decided AS d
LEFT JOIN equity AS e ON e.run_id = d.run_id AND e.date = d.decision_date
LEFT JOIN sessions AS entry
       ON entry.source = d.source AND entry.ticker = d.ticker AND entry.date = d.fill_date
LEFT JOIN sessions AS exit
       ON exit.source = entry.source AND exit.ticker = entry.ticker
      AND exit.session = entry.session + d.horizon
"""

_V_DECISIONS_COLUMNS_7 = {
    "tools": "distinct tool names called (providers dropped), sorted",
    "tool_set": "tools joined with '+', e.g. 'risk+technical'; 'none' if no tool",
    "source": "price source of the run (runs.source); NULL when the run is not stored",
    "entry_price": "the fill's reference price: adjusted open of fill_date where the "
                   "source has opens, else its adj_close",
    "exit_date": "session `horizon` sessions after fill_date in the ticker's prices",
    "exit_price": "adj_close on exit_date",
    "forward_return": "exit_price / entry_price - 1; NULL until the horizon has passed",
    "contribution": "target_weight * forward_return: the decision's realised "
                    "contribution to return, a fraction of equity",
    "pnl_usd": "contribution x the run's equity at the decision's close (USD); NULL "
               "when the run stored no equity that day",
}

_V7 = (
    "ALTER TABLE decisions ADD COLUMN executor VARCHAR",
    "ALTER TABLE tool_calls ADD COLUMN executor VARCHAR",
    "COMMENT ON COLUMN decisions.executor IS 'what answered the decision''s tool calls: panel "
    "(whole-period panels) or live (real calls through the tool runner); NULL before schema "
    "version 7'",
    "COMMENT ON COLUMN tool_calls.executor IS 'panel (a value of a whole-period panel), live (a "
    "real call by a run through the tool runner) or NULL (quantorch tools run, or stored before "
    "schema version 7)'",
    *_documented_view(
        "v_decisions",
        _V_DECISIONS_7,
        "Decisions with their realised forward return, defined as the decision dataset and the "
        "reward define it: from the fill price (adjusted open of fill_date, else its adjusted "
        "close) to adj_close `horizon` sessions after fill_date, from the run's price source",
        _V_DECISIONS_COLUMNS_7,
        replace=True,
    ),
)


# ---- migration 8: paper accounts -------------------------------------------------------------
# What a paper account is bound to (profile, orchestrator, universe, source, broker) so that a
# changed profile is refused instead of silently trading under it, where its history starts (the
# anchor every cycle loads its data from, so a paper account decides exactly as a backtest from
# its first session would), and the RiskGuard state it carries from cycle to cycle.

_V8 = (
    """
    CREATE TABLE paper_accounts (
        account          VARCHAR   NOT NULL PRIMARY KEY,
        profile          VARCHAR   NOT NULL,
        profile_ref      VARCHAR   NOT NULL,
        profile_hash     VARCHAR   NOT NULL,
        strategy         VARCHAR   NOT NULL,
        broker           VARCHAR   NOT NULL,
        source           VARCHAR   NOT NULL,
        universe         VARCHAR[] NOT NULL,
        benchmark        VARCHAR,
        rebalance        VARCHAR   NOT NULL,
        initial_cash     DOUBLE    NOT NULL,
        first_session    DATE      NOT NULL,
        history_start    DATE      NOT NULL,
        config_hash      VARCHAR   NOT NULL,
        peak_equity      DOUBLE,
        cooldown_until   DATE,
        halted_reason    VARCHAR,
        created_at       TIMESTAMP NOT NULL,
        updated_at       TIMESTAMP NOT NULL
    )
    """,
    "COMMENT ON TABLE paper_accounts IS 'One row per paper account: what it trades under, where "
    "its history starts, the RiskGuard state carried between cycles, and whether it is halted'",
    *(
        f"COMMENT ON COLUMN paper_accounts.{column} IS {_quote(text)}"
        for column, text in {
            "account": "account name (--account); also the account of its orders, fills and ledger",
            "profile": "trader profile the account trades under",
            "profile_ref": "how the profile was given: a shipped profile's name or the absolute "
                           "path of its YAML file (later cycles load it from there)",
            "profile_hash": "hash of the profile's settings when the account was opened: a cycle "
                            "under a changed profile is refused",
            "strategy": "orchestrator (e.g. policy) or rule strategy that decides",
            "broker": "sim (built-in) or alpaca",
            "source": "price source of its cycles",
            "universe": "tickers it trades",
            "benchmark": "benchmark ticker its P&L is compared with; NULL when none",
            "rebalance": "daily | weekly | monthly: which sessions decide (plus the first)",
            "initial_cash": "cash deposited when the account was opened (USD)",
            "first_session": "the session of its first cycle",
            "history_start": "first session of price history every cycle loads (its warm-up "
                             "before first_session), so decisions equal a backtest's from there",
            "config_hash": "hash of the result-changing settings when it was opened",
            "peak_equity": "highest equity at any close (the drawdown kill switch's reference)",
            "cooldown_until": "set while the kill switch holds the book flat: the session it "
                              "re-arms at",
            "halted_reason": "why trading is stopped for the account (a failed reconciliation); "
                             "NULL while it trades",
            "created_at": "when it was opened (UTC)",
            "updated_at": "when its row last changed (UTC)",
        }.items()
    ),
    "ALTER TABLE cycles ADD COLUMN resume_step VARCHAR",
    "COMMENT ON COLUMN cycles.resume_step IS 'the last step the cycle committed (kept when it "
    "fails): a retry resumes after it; NULL: from the start'",
)

# ---- migration 9: the llm orchestrator ---------------------------------------------------------
# Its decisions carry the price of the model's own tokens beside the tools' (its rationale goes in
# the existing column); each decision's whole conversation is kept, for audit and for fine-tuning.

_V_DECISIONS_9 = _V_DECISIONS_7.replace(
    "d.rationale, d.reward, d.executor, d.source,",
    "d.rationale, d.reward, d.executor, d.llm_cost_usd, d.llm_tokens, d.source,",
)

_V9 = (
    "ALTER TABLE decisions ADD COLUMN llm_cost_usd DOUBLE",
    "ALTER TABLE decisions ADD COLUMN llm_tokens INTEGER",
    "COMMENT ON COLUMN decisions.llm_cost_usd IS 'the llm orchestrator''s own tokens for the "
    "decision, priced with the llm: prices (USD; 0 when every reply came from the transcript "
    "cache); NULL for other orchestrators'",
    "COMMENT ON COLUMN decisions.llm_tokens IS 'prompt + completion tokens of the llm "
    "orchestrator''s conversation for the decision; NULL for other orchestrators'",
    """
    CREATE TABLE llm_transcripts (
        run_id            VARCHAR   NOT NULL,
        decision_id       INTEGER   NOT NULL,
        ticker            VARCHAR   NOT NULL,
        decision_date     DATE      NOT NULL,
        model             VARCHAR   NOT NULL,
        messages          JSON      NOT NULL,
        rounds            INTEGER   NOT NULL,
        cached_rounds     INTEGER   NOT NULL,
        corrections       INTEGER   NOT NULL,
        prompt_tokens     INTEGER   NOT NULL,
        completion_tokens INTEGER   NOT NULL,
        cost_usd          DOUBLE    NOT NULL,
        latency_ms        DOUBLE    NOT NULL,
        position          VARCHAR,
        fallback          VARCHAR,
        rationale         VARCHAR,
        created_at        TIMESTAMP NOT NULL,
        PRIMARY KEY (run_id, decision_id)
    )
    """,
    "COMMENT ON TABLE llm_transcripts IS 'One row per decision of the llm orchestrator: the "
    "whole conversation with the model, its tokens, cost and latency, and how it ended'",
    *(
        f"COMMENT ON COLUMN llm_transcripts.{column} IS {_quote(text)}"
        for column, text in {
            "run_id": "the run (backtest, evaluation or paper cycle) of the decision",
            "decision_id": "the decision (decisions.decision_id of the same run)",
            "ticker": "stock decided",
            "decision_date": "session whose close the decision was taken at",
            "model": "model name the requests carried",
            "messages": "the conversation as sent and answered (OpenAI messages: system, user, "
                        "assistant with tool_calls, tool results)",
            "rounds": "model replies used (requests, cached or not)",
            "cached_rounds": "replies served from the transcript cache (they cost nothing)",
            "corrections": "corrective re-prompts after a malformed, refused or missing call",
            "prompt_tokens": "prompt tokens of all its replies",
            "completion_tokens": "completion tokens of all its replies",
            "cost_usd": "price of the tokens of replies not served from the cache (USD)",
            "latency_ms": "time spent waiting for the model (ms; 0 when all cached)",
            "position": "bucket submitted (short, half_short, flat, half_long, long); NULL "
                        "when the fallback kept the position",
            "fallback": "why the position was kept instead (no valid call after a corrective "
                        "re-prompt, no decision within llm.max_rounds); NULL when it decided",
            "rationale": "the model's rationale (or the fallback's reason)",
            "created_at": "when the row was written (UTC)",
        }.items()
    ),
    *_documented_view(
        "v_decisions",
        _V_DECISIONS_9,
        "Decisions with their realised forward return, defined as the decision dataset and the "
        "reward define it: from the fill price (adjusted open of fill_date, else its adjusted "
        "close) to adj_close `horizon` sessions after fill_date, from the run's price source",
        {
            **_V_DECISIONS_COLUMNS_7,
            "llm_cost_usd": "the llm orchestrator's own tokens for the decision (USD); NULL for "
                            "other orchestrators",
            "llm_tokens": "tokens of its conversation; NULL for other orchestrators",
        },
        replace=True,
    ),
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "prices, coverage, runs, equity, fills", _V1),
    Migration(2, "fundamentals, news, tool_calls, tool_cache", _V2),
    Migration(3, "decisions", _V3),
    Migration(4, "research views; descriptions of every column", _V4),
    Migration(5, "equal-weight comparison and benchmark label on every run", _V5),
    Migration(6, "orders, broker fills, positions, cash ledger, paper cycles", _V6),
    Migration(7, "executor of decisions and tool calls; one forward-return definition", _V7),
    Migration(8, "paper accounts; the step a failed cycle resumes after", _V8),
    Migration(9, "llm orchestrator: token cost of decisions, transcripts", _V9),
)

LATEST_VERSION = MIGRATIONS[-1].version
