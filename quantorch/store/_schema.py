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

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "prices, coverage, runs, equity, fills", _V1),
    Migration(2, "fundamentals, news, tool_calls, tool_cache", _V2),
    Migration(3, "decisions", _V3),
)

LATEST_VERSION = MIGRATIONS[-1].version
