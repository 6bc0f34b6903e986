"""Typed, strict, frozen configuration loaded from YAML.

``configs/default.yaml`` ships inside the package as ``quantorch.configs/default.yaml``. Unknown
keys are refused; a bad file fails at load time with the file, the field and the fix. CLI flags
override file values through :func:`QuantorchConfig.with_overrides`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from quantorch.errors import ConfigError

__all__ = [
    "ORCHESTRATOR",
    "CostConfig",
    "DataConfig",
    "BacktestConfig",
    "DatabaseConfig",
    "OrchestratorConfig",
    "LLMConfig",
    "PaperConfig",
    "TrainingConfig",
    "ToolsConfig",
    "QuantorchConfig",
    "default_config_path",
    "load_config",
    "resolve_db_path",
]

DB_ENV_VAR = "QUANTORCH_DB"
#: ``backtest.strategy`` value that runs the configured orchestrator (any other value names a
#: rule strategy).
ORCHESTRATOR = "orchestrator"
#: The benchmark named in a config, as each source spells it.
_BENCHMARK_ALIASES = {("yfinance", "SP500"): "^GSPC"}
Rebalance = Literal["daily", "weekly", "monthly"]
SourceName = Literal["sample", "yfinance", "file"]


class _Strict(BaseModel):
    # inf and NaN are never a valid setting (an infinite cash or fee crashes the engine later)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CostConfig(_Strict):
    """Trading costs, always charged. Basis points of traded notional."""

    fee_bps: float = Field(1.0, ge=0, le=1000, description="commission per trade, bps of notional")
    slippage_bps: float = Field(
        5.0, ge=0, le=1000, description="adverse price move per trade, bps of the fill price"
    )


class DataConfig(_Strict):
    """Where prices come from."""

    source: SourceName = "sample"


class BacktestConfig(_Strict):
    """How a backtest trades."""

    strategy: str = ORCHESTRATOR
    rebalance: Rebalance = "weekly"
    tool_calls: Literal["panel", "live"] = Field(
        "panel",
        description="how an orchestrator's tool calls are answered: whole-period panels "
        "(fast) or real calls through the tool runner at each decision time (cached)",
    )
    initial_cash: float = Field(1_000_000.0, gt=0)
    start: dt.date | None = None
    end: dt.date | None = None


class OrchestratorConfig(_Strict):
    """Which orchestrator a backtest runs, under which trader profile, with which tools."""

    name: str = "policy"
    profile: str = "neutral"
    checkpoint: Path | None = Field(None, description="policy checkpoint (default: shipped)")
    all_tools_checkpoint: Path | None = Field(
        None, description="decision head for the all-tools baseline (default: shipped)"
    )
    tools: list[str] = Field(
        default_factory=lambda: [
            "technical:basic",
            "technical:full",
            "risk:fast",
            "risk:full",
            "fundamental:factor",
            "sentiment:lexicon",
        ],
        description="tool:provider slots the policy routes between",
    )
    horizon: int = Field(5, ge=1, le=63, description="reward horizon in sessions")


class TrainingConfig(_Strict):
    """Walk-forward periods and length of PPO training (``quantorch train``)."""

    train_start: dt.date = dt.date(2005, 1, 1)
    train_end: dt.date = dt.date(2018, 12, 31)
    val_start: dt.date = dt.date(2019, 1, 1)
    val_end: dt.date = dt.date(2019, 12, 31)
    profiles: list[str] = Field(default_factory=lambda: ["all"])
    steps: int = Field(1_000_000, ge=1_000)

    @model_validator(mode="after")
    def _periods_do_not_overlap(self) -> TrainingConfig:
        if not self.train_start < self.train_end < self.val_start <= self.val_end:
            raise ValueError(
                "periods must be ordered train_start < train_end < val_start <= val_end "
                "(train and validation may not overlap)"
            )
        return self


class ToolsConfig(_Strict):
    """Tool discovery and execution."""

    extra_dirs: list[Path] = Field(
        default_factory=list, description="folders with extra tool modules"
    )
    timeout_s: float = Field(30.0, gt=0, description="max seconds per tool call")


class LLMConfig(_Strict):
    """The LLM orchestrator's endpoint (``--orchestrator llm``): any OpenAI-compatible server,
    e.g. ``vllm serve Qwen/Qwen3-8B --enable-auto-tool-choice --tool-call-parser hermes``
    (``quantorch serve llm`` prints the command). The key itself never goes in a file: only the
    *name* of the environment variable that holds it."""

    base_url: str | None = Field(
        None, description="the server's /v1 address, e.g. http://localhost:8000/v1; "
        "none: --orchestrator llm is refused with the command to start one")
    model: str = Field("Qwen/Qwen3-8B", min_length=1,
                       description="model name as the server lists it (GET /v1/models)")
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the environment variable holding the API key (none: no key, "
        "as for a local vllm serve)")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="seconds per request")
    max_concurrency: int = Field(16, ge=1, le=1024,
                                 description="requests in flight at once (vLLM batches them)")
    max_retries: int = Field(3, ge=0, le=10,
                             description="retries on timeouts, HTTP 429 and 5xx, with backoff")
    usd_per_1m_input_tokens: float = Field(
        0.05, ge=0, description="price of the orchestrator's prompt tokens (self-hosted 8B: "
        "GPU hours / tokens served; hosted APIs: their price list)")
    usd_per_1m_output_tokens: float = Field(0.20, ge=0,
                                            description="price of its completion tokens")
    training_cutoff: dt.date | None = Field(
        dt.date(2024, 12, 31), description="the model's training-data cutoff: a backtest that "
        "starts before it is flagged (the model may have seen the period)")
    max_rounds: int = Field(6, ge=2, le=32, description="model replies per decision at most")
    max_tokens: int = Field(512, ge=16, le=32768, description="tokens per reply at most")
    temperature: float = Field(0.0, ge=0, le=2)


class PaperConfig(_Strict):
    """Scheduled paper trading (``quantorch paper``): which account, broker and schedule.

    The account trades the top-level ``universe`` from ``data.source`` with the configured
    orchestrator (or ``backtest.strategy``) under its ``profile`` and the ``backtest.rebalance``
    schedule, exactly the decision path of a backtest.
    """

    account: str = Field("paper", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$",
                         description="paper account name; accounts never touch each other")
    broker: Literal["sim", "alpaca"] = Field(
        "sim", description="sim (built in: the backtest's fill rules) or alpaca (paper API)")
    profile: str | None = Field(None, description="trader profile (default: orchestrator.profile)")
    initial_cash: float | None = Field(
        None, gt=0, description="cash of a new sim account (default: backtest.initial_cash)")
    cycle_offset_minutes: int = Field(
        30, ge=0, le=600, description="minutes after each session's actual close a cycle runs")
    misfire_grace_minutes: int = Field(
        360, ge=1, le=7 * 24 * 60,
        description="a cycle due while the trader was down still runs within this grace")
    tool_calls: Literal["panel", "live"] = Field(
        "live", description="paper cycles make real, logged tool calls by default")


class DatabaseConfig(_Strict):
    """The DuckDB file that stores prices, runs and everything they produce."""

    path: Path = Path("quantorch.duckdb")


class QuantorchConfig(_Strict):
    """The whole configuration of one quantorch workspace."""

    universe: list[str] = Field(min_length=1)
    benchmark: str = "SP500"
    data: DataConfig = DataConfig()
    costs: CostConfig = CostConfig()
    backtest: BacktestConfig = BacktestConfig()
    strategies: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-strategy parameters, keyed by strategy name"
    )
    orchestrator: OrchestratorConfig = OrchestratorConfig()
    training: TrainingConfig = TrainingConfig()
    tools: ToolsConfig = ToolsConfig()
    paper: PaperConfig = PaperConfig()
    llm: LLMConfig = LLMConfig()
    database: DatabaseConfig = DatabaseConfig()
    reports_dir: Path = Path("backtests")
    seed: int = Field(42, ge=0)

    @field_validator("universe")
    @classmethod
    def _tickers_upper_unique(cls, value: list[str]) -> list[str]:
        tickers = [t.strip().upper() for t in value]
        if any(not t for t in tickers):
            raise ValueError("empty ticker in universe")
        duplicates = sorted({t for t in tickers if tickers.count(t) > 1})
        if duplicates:
            raise ValueError(f"duplicate tickers {duplicates}")
        return tickers

    @field_validator("benchmark")
    @classmethod
    def _benchmark_upper(cls, value: str) -> str:
        return value.strip().upper()

    def with_overrides(
        self, overrides: dict[str, Any], labels: dict[str, str] | None = None
    ) -> QuantorchConfig:
        """A copy with dotted-key overrides applied (``{"costs.fee_bps": 2}``), re-validated.

        ``labels`` names where each key came from (``{"costs.fee_bps": "--fee-bps"}``), so a bad
        value is reported as the flag the user typed.
        """
        data = self.model_dump(mode="python")
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node[key]
            node[leaf] = value
        given = {k: labels.get(k, k) for k, v in overrides.items() if v is not None} if labels else {}
        return _validate(data, source="command-line options", labels=given)

    @property
    def benchmark_symbol(self) -> str | None:
        """The benchmark ticker as the configured source spells it (None when disabled)."""
        if self.benchmark in {"", "NONE"}:
            return None
        return _BENCHMARK_ALIASES.get((self.data.source, self.benchmark), self.benchmark)

    def config_hash(self) -> str:
        """A stable hash of everything that changes a run's result (not paths)."""
        exclude = {"database", "reports_dir", "training", "paper"}
        if self.orchestrator.name != "llm":
            exclude.add("llm")  # the endpoint shapes only the llm orchestrator's decisions
        payload = self.model_dump(mode="json", exclude=exclude)
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_config_path() -> Path:
    """The packaged ``configs/default.yaml``."""
    return Path(str(resources.files("quantorch.configs").joinpath("default.yaml")))


def _validate(data: Any, source: str, labels: dict[str, str] | None = None) -> QuantorchConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings at the top level")
    try:
        return QuantorchConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))
        flag = (labels or {}).get(field)
        if flag is not None and flag.startswith("-"):
            got = first.get("input")
            raise ConfigError(f"bad {flag} {got!r}: {first['msg'].lower()}") from exc
        raise ConfigError(f"{source}: {_describe(exc)}") from exc


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{field}' (remove it or check its spelling; see configs/default.yaml)"
    if kind == "missing":
        return f"missing required key '{field}' (add it; see configs/default.yaml)"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    got = first.get("input")
    got_text = f", got {got!r}" if got is not None and not isinstance(got, dict | list) else ""
    return f"field '{field}': {first['msg']}{got_text}; fix this value{more}"


def read_yaml_file(path: Path, what: str, fix: str = "check the path") -> Any:
    """The parsed YAML of a settings file, or one clear :class:`ConfigError`.

    ``what`` names the kind of file in messages ("config file", "profile file"), ``fix`` what
    to do about a missing one. A missing or unreadable file, a binary file and malformed YAML
    are all refused with the path and the fix.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} not found ({fix})") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{what} {path} is a folder: pass a YAML file") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        if b"\x00" in raw:
            raise UnicodeDecodeError("utf-8", raw, raw.index(b"\x00"), raw.index(b"\x00") + 1,
                                     "NUL byte")
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a text YAML file (byte {exc.start + 1} is not UTF-8 text); pass a "
            f"YAML {what}"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(
            f"{path}: malformed YAML{where}: {problem} (fix the syntax there)"
        ) from exc


def load_config(path: str | Path | None = None) -> QuantorchConfig:
    """Load and validate a config file; ``None`` loads the packaged default.

    Raises
    ------
    ConfigError
        The file is missing, is not a text YAML file, or fails validation. The message names
        the file, the field and the fix.
    """
    config_path = Path(path) if path is not None else default_config_path()
    data = read_yaml_file(config_path, "config file", "pass an existing file with --config")
    return _validate(data if data is not None else {}, source=str(config_path))


def resolve_db_path(config: QuantorchConfig, cli_db: str | Path | None = None) -> Path:
    """``--db`` wins, then the ``QUANTORCH_DB`` environment variable, then the config."""
    if cli_db:
        return Path(cli_db)
    env = os.environ.get(DB_ENV_VAR)
    if env:
        return Path(env)
    return config.database.path
