"""No secret in stderr, the database or a file: plant a key and a password, then grep everything.

A loopback OpenAI-compatible server answers 401 and 500 with bodies that echo the request's
Authorization header (decoded, too) and URL, a valid answer whose rationale repeats them (a
leaky proxy), and a clean valid answer. ``quantorch tools run sentiment --provider llm`` runs
against each, as a real process, with the key in ``QUANTORCH_LLM_API_KEY`` and a password in
``QUANTORCH_LLM_BASE_URL``. Its stdout and stderr, every column of every table of the DuckDB
file (cast to text) and every file under the test's folder must be free of the planted values.

:func:`find_secrets_in_folder`, :func:`find_secrets_in_database` and
:func:`find_secrets_in_text` are meant for reuse (e.g. a backtest report's folder).

The first tests are the properties of :mod:`quantorch.redact` itself.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantorch import redact as redaction
from quantorch.redact import MASK, known_secrets, redact, redact_url, register_secret

PLANTED = "planted"  # every planted value contains it
KEY = f"sk-planted-SECRET-{uuid.uuid4().hex}"
USER, PASSWORD = "user", "planted-pass"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()  # what basic auth sends
NEEDLES = (PLANTED, BASIC)

# real-looking AAPL headlines of 2021-03-01 (UTC), inside the 3-day window of the 03-02 close
NEWS_CSV = """published_at,ticker,headline,source
2021-03-01T13:05:00Z,AAPL,"Apple shares rise as iPhone demand in China stays strong",newswire
2021-03-01T15:40:00Z,AAPL,"Apple supplier warns chip shortage could hit Mac and iPad output",newswire
2021-03-01T20:15:00Z,AAPL,"Analyst reiterates buy on Apple ahead of spring product event",newswire
"""


# ---- grep helpers (reusable) --------------------------------------------------------------------


def find_secrets_in_text(text: str, needles: Iterable[str] = NEEDLES) -> list[str]:
    """The needles that occur in ``text`` (case-insensitive)."""
    lowered = text.lower()
    return [n for n in needles if n.lower() in lowered]


def find_secrets_in_folder(folder: Path, needles: Iterable[str] = NEEDLES) -> list[str]:
    """``path: needle`` for every file under ``folder`` whose bytes hold a needle
    (case-insensitive; binary files too, e.g. the DuckDB file and its WAL)."""
    needles = list(needles)
    hits = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes().lower()
        hits += [f"{path}: {n}" for n in needles if n.lower().encode() in data]
    return hits


def find_secrets_in_database(path: Path, needles: Iterable[str] = NEEDLES) -> list[str]:
    """``table.column: needle`` for every column of every table (cast to text) that holds a
    needle (case-insensitive)."""
    needles = [n.lower() for n in needles]
    hits = []
    with duckdb.connect(str(path), read_only=True) as con:
        columns = con.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE table_catalog = current_database() ORDER BY ALL"
        ).fetchall()
        assert columns, f"no tables in {path}"
        for schema, table, column in columns:
            for needle in needles:
                found = con.execute(
                    f'SELECT count(*) FROM "{schema}"."{table}" '
                    f'WHERE contains(lower(CAST("{column}" AS VARCHAR)), ?)',
                    [needle],
                ).fetchall()[0][0]
                if found:
                    hits.append(f"{schema}.{table}.{column}: {needle} ({found} rows)")
    return hits


# ---- quantorch.redact: properties and examples ------------------------------------------------

_SECRET_TEXT = st.text(min_size=6, max_size=40).filter(lambda s: "*" not in s)
_FRAGMENTS = st.sampled_from(
    [
        "Bearer ", "bearer\t", "Basic ", "Authorization: ", '"authorization": "', "X-Api-Key=",
        "http://", "https://", "user:pass@", "@", ":", "/", "?", "&", ";", "=", "api_key=",
        "token=", "sig=", "password: ", "sk-", "hf_", "ghp_", "abcdefgh12345678", "dXNlcjpwYXNz",
        "dXNlcjpwbGFudGVkLXBhc3M=", "==", MASK, "*", " ", "\n", '"', "'", "host:8000", "v1",
    ]
)  # fmt: skip


@given(
    before=st.text(max_size=30),
    secret=_SECRET_TEXT,
    between=st.text(max_size=30),
    after=st.text(max_size=30),
)
@settings(max_examples=300, deadline=None)
def test_a_planted_secret_never_survives_redact(before, secret, between, after):
    text = before + secret + between + secret + after
    assert secret not in redact(text, [secret])


@given(parts=st.lists(st.one_of(_FRAGMENTS, st.text(max_size=8)), max_size=25))
@settings(max_examples=500, deadline=None)
def test_redact_is_idempotent(parts):
    once = redact("".join(parts), ["abcdefgh12345678"])
    assert redact(once, ["abcdefgh12345678"]) == once


@given(parts=st.lists(st.one_of(_FRAGMENTS, st.text(max_size=8)), max_size=25))
@settings(max_examples=300, deadline=None)
def test_a_bearer_token_never_survives(parts):
    token = "tok" + uuid.uuid4().hex[:5]
    text = "".join(parts) + f" Authorization: Bearer {token} " + "".join(parts)
    assert token not in redact(text)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pw@127.0.0.1:8000/v1", "http://***@127.0.0.1:8000/v1"),
        ("https://u:p%40ss@host/v1?model=m&api_key=abc", "https://***@host/v1?model=m&api_key=***"),
        ("https://host/x?apikey=1&token=2&sig=3&Signature=4&page=5",
         "https://host/x?apikey=***&token=***&sig=***&Signature=***&page=5"),
        ("https://s3/b?X-Amz-Signature=ff&X-Amz-Security-Token=ee&x=1",
         "https://s3/b?X-Amz-Signature=***&X-Amz-Security-Token=***&x=1"),
        ("http://localhost:8000/v1", "http://localhost:8000/v1"),
        ("https://host/x?key=", "https://host/x?key="),
    ],
)  # fmt: skip
def test_redact_url(url, shown):
    assert redact_url(url) == shown
    assert redact_url(shown) == shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("endpoint http://user:pw@h:1/v1 refused", "endpoint http://***@h:1/v1 refused"),
        ("Authorization: Bearer abc.def-1", "Authorization: Bearer ***"),
        ('{"authorization": "Token abc"}', '{"authorization": "Token ***"}'),
        ("got Bearer x", "got Bearer ***"),  # short tokens are still masked by shape
        ("Basic dXNlcjpwYXNz sent", "Basic *** sent"),
        ("the basic provider uses basic auth", "the basic provider uses basic auth"),
        ("key sk-proj-abcdefgh123 refused", "key sk-*** refused"),
        ("Incorrect API key provided: sk-abc********wxyz.", "Incorrect API key provided: sk-***."),
        ('{"password": "hunter22", "api_key": "k"}', '{"password": "***", "api_key": "***"}'),
        ("risk-parity and task-abcdefghij stay", "risk-parity and task-abcdefghij stay"),
        ("HTTP 500: 'CUDA out of memory'", "HTTP 500: 'CUDA out of memory'"),
    ],
)
def test_redact_masks_credentials_by_shape(text, shown):
    assert redact(text) == shown


def test_short_values_are_not_masked_as_substrings():
    assert redact("the pin is 1234 and 1234 again", ["1234"]) == "the pin is 1234 and 1234 again"
    assert redact("the pin is 123456", ["123456"]) == f"the pin is {MASK}"


def test_environment_and_registered_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hub-token-value-77")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "alpaca-secret-99")
    monkeypatch.setenv("QUANTORCH_SEC_BASE_URL", "https://mirror:mirror-pw-5@sec.example/")
    registered = f"registered-{uuid.uuid4().hex[:8]}"
    register_secret(registered)
    register_secret("abc")  # too short: ignored
    text = "hub-token-value-77 alpaca-secret-99 mirror-pw-5 " + registered
    assert redact(text) == " ".join([MASK] * 4)
    assert {"hub-token-value-77", "alpaca-secret-99", "mirror-pw-5", registered} <= set(
        known_secrets()
    )
    assert "abc" not in known_secrets()
    assert set(redaction.SECRET_ENV_VARS) >= {
        "QUANTORCH_LLM_API_KEY", "ALPACA_API_KEY_ID", "APCA_API_KEY_ID", "ALPACA_API_SECRET_KEY",
        "APCA_API_SECRET_KEY", "OPENAI_API_KEY", "HF_TOKEN",
    }  # fmt: skip


# ---- the loopback server ---------------------------------------------------------------------


class _LeakyHandler(BaseHTTPRequestHandler):
    """Scenario = first path segment. Every answer echoes what the request carried."""

    received: ClassVar[list[dict]] = []

    def do_POST(self):
        scenario = self.path.strip("/").split("/")[0]
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length))
        auth = self.headers.get("Authorization") or ""
        decoded = ""
        if auth.startswith("Basic "):
            decoded = base64.b64decode(auth[6:]).decode()
        url = f"http://{self.headers.get('Host')}{self.path}"
        type(self).received.append({"scenario": scenario, "authorization": auth})
        content_type = "application/json"
        if scenario == "unauthorized":  # OpenAI's error object, echoing the credentials
            status = 401
            payload = json.dumps(
                {
                    "error": {
                        "message": f"Incorrect API key provided: {auth} ({decoded}) for {url}",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    },
                    "echo": {"headers": dict(self.headers), "decoded": decoded, "url": url},
                }
            )
        elif scenario == "crash":  # a proxy's plain-text error page dumping the request
            status, content_type = 500, "text/plain"
            headers = "".join(f"{k}: {v}\n" for k, v in self.headers.items())
            payload = (
                f"Internal Server Error\n{headers}decoded credentials: {decoded}\nurl: {url}\n"
                + "x" * 500
            )
        else:
            status = 200
            rationale = "Strong iPhone demand outweighs the chip shortage."
            if scenario == "echo_ok":  # a leaky proxy that writes into the answer
                rationale = f"Seen {auth} {decoded} at {url}; {rationale}"
            answer = {"score": 0.4, "confidence": 0.7, "rationale": rationale}
            payload = json.dumps(
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": request["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": json.dumps(answer)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 700, "completion_tokens": 40, "total_tokens": 740},
                }
            )
        body = payload.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def leaky_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _LeakyHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _base_url(port: int, scenario: str, in_url: bool) -> str:
    credentials = f"{USER}:{PASSWORD}@" if in_url else ""
    return f"http://{credentials}127.0.0.1:{port}/{scenario}/v1"


def _quantorch(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """The real command line in a fresh process (nothing shared with this one)."""
    return subprocess.run(
        [sys.executable, "-m", "quantorch.cli.main", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,  # the exit code is asserted per scenario
    )


# ---- the command line, the database, the files -------------------------------------------------


@pytest.mark.slow  # seven fresh processes each
@pytest.mark.parametrize("credentials", ["api_key", "url_and_api_key"])
def test_no_planted_secret_in_output_database_or_files(leaky_server, tmp_path, credentials):
    in_url = credentials == "url_and_api_key"
    db = tmp_path / "q.duckdb"
    news = tmp_path / "aapl_news.csv"
    news.write_text(NEWS_CSV)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTORCH_")}
    env.update(QUANTORCH_LLM_API_KEY=KEY, QUANTORCH_LLM_MODEL="m", QUANTORCH_LLM_TIMEOUT="20",
               QUANTORCH_DB=str(db), COLUMNS="200")  # fmt: skip
    imported = _quantorch(["data", "import-news", str(news), "--db", str(db)], env, tmp_path)
    assert imported.returncode == 0, imported.stderr
    call = ["tools", "run", "sentiment", "--provider", "llm", "--ticker", "AAPL",
            "--asof", "2021-03-02", "--db", str(db)]  # fmt: skip
    runs = [
        ("unauthorized", []),
        ("unauthorized", ["--json"]),
        ("crash", []),
        ("crash", ["--debug"]),
        ("echo_ok", []),
        ("ok", ["--json"]),
    ]
    _LeakyHandler.received = []
    transcript = []
    for scenario, flags in runs:
        env["QUANTORCH_LLM_BASE_URL"] = _base_url(leaky_server, scenario, in_url)
        done = _quantorch([*call, *flags], env, tmp_path)
        transcript.append((scenario, flags, done))
        failing = scenario in ("unauthorized", "crash")
        assert (done.returncode != 0) == failing, (scenario, done.stdout, done.stderr)
    # the server really got the credentials (and echoed them back every time)
    expected = f"Basic {BASIC}" if in_url else f"Bearer {KEY}"
    assert [r["authorization"] for r in _LeakyHandler.received] == [expected] * len(runs)

    for scenario, flags, done in transcript:
        leaked = find_secrets_in_text(done.stdout + done.stderr)
        assert not leaked, (scenario, flags, leaked, done.stdout, done.stderr)
    by_run = {(s, tuple(f)): d for s, f, d in transcript}
    assert "HTTP 401" in by_run[("unauthorized", ())].stderr
    assert "QUANTORCH_LLM_API_KEY" in by_run[("unauthorized", ())].stderr  # the hint
    crash = by_run[("crash", ())]
    assert "HTTP 500" in crash.stderr and len(crash.stderr) < 1000  # an excerpt, not the page
    assert "Traceback" in by_run[("crash", ("--debug",))].stderr
    assert "score +0.40" in by_run[("echo_ok", ())].stdout
    ok = json.loads(by_run[("ok", ("--json",))].stdout)
    assert ok["error"] is None and ok["features"]["sentiment_score"] == 0.4

    assert not find_secrets_in_database(db)
    assert not find_secrets_in_folder(tmp_path)
    with duckdb.connect(str(db), read_only=True) as con:
        errors = con.execute(
            "SELECT error FROM tool_calls WHERE error IS NOT NULL ORDER BY created_at"
        ).fetchall()
    assert len(errors) == 4 and all("answered HTTP" in e for (e,) in errors)  # logged, redacted


def test_no_planted_secret_in_the_prompt_cache_or_the_call_log(leaky_server, tmp_path, monkeypatch):
    """The runner with the store as prompt cache: the answer goes to tool_cache, the call to
    tool_calls, and a tool that raises with the key in its message is logged redacted."""
    from quantorch.tools.sentiment import SPEC, TOOL

    from quantorch.data.news import import_news, read_news_file
    from quantorch.store import Store
    from quantorch.toolkit.market import load_ticker_history
    from quantorch.toolkit.runner import ToolRunner
    from quantorch.toolkit.spec import ToolRequest

    monkeypatch.setenv("QUANTORCH_LLM_API_KEY", KEY)
    monkeypatch.setenv("QUANTORCH_LLM_MODEL", "m")
    monkeypatch.setenv("QUANTORCH_LLM_BASE_URL", _base_url(leaky_server, "echo_ok", True))
    store = Store(tmp_path / "q.duckdb")
    news = tmp_path / "aapl_news.csv"
    news.write_text(NEWS_CSV)
    import_news(store, *read_news_file(news))
    market = load_ticker_history(store, "sample", "AAPL")
    market = dataclasses.replace(market, extras={"store": store})

    class RaisingTool:
        """A plugin tool whose exception message carries a URL with credentials and the key."""

        spec = SPEC.model_copy(update={"name": "raising"})

        def run(self, request, data, provider):
            raise RuntimeError(f"POST {_base_url(1, 'x', True)} with Authorization: Bearer {KEY}")

    asof = dt.datetime(2021, 3, 2)
    tools = {"sentiment": TOOL, "raising": RaisingTool()}
    with ToolRunner(store, timeout_s=20, tools=tools) as runner:
        good = runner.run(
            ToolRequest(tool="sentiment", ticker="AAPL", asof=asof, provider="llm"), market
        )
        bad = runner.run(ToolRequest(tool="raising", ticker="AAPL", asof=asof), market)
    assert good.error is None and good.coverage and MASK in good.summary
    assert bad.error is not None and "RuntimeError" in bad.error and MASK in bad.error
    assert not find_secrets_in_text(good.summary + bad.summary + bad.error)
    with store.connect(read_only=True) as con:
        cached = con.execute("SELECT count(*) FROM tool_cache WHERE provider = 'llm'").fetchall()
    assert cached == [(1,)]
    assert not find_secrets_in_database(store.path)
    assert not find_secrets_in_folder(tmp_path)


@pytest.mark.slow
def test_a_backtest_with_every_secret_set_stores_and_reports_none(loaded_db, tmp_path):
    """The run's config, report, stdout and stderr carry no key, even with every secret set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTORCH_")}
    env.update(QUANTORCH_LLM_API_KEY=KEY, QUANTORCH_LLM_MODEL="m", COLUMNS="200",
               QUANTORCH_LLM_BASE_URL=f"http://{USER}:{PASSWORD}@127.0.0.1:9/v1")  # fmt: skip
    args = ["backtest", "--start", "2022", "--universe", "AAPL,MSFT", "--db", str(loaded_db)]
    for flags in ([], ["--json"], ["--debug", "--strategy", "nosuch"]):
        done = _quantorch([*args, *flags], env, tmp_path)
        assert not find_secrets_in_text(done.stdout + done.stderr), (flags, done.stderr)
    assert list((tmp_path / "backtests").glob("bt-*.html"))
    assert not find_secrets_in_folder(tmp_path)
    assert not find_secrets_in_database(loaded_db)
