#!/usr/bin/env bash
# Serve an 8B checkpoint with vLLM on this GPU machine and time a one-year backtest of the LLM
# orchestrator against it: decisions/s, tokens/s and cost. Then stop the server.
#
#   benchmarks/llm_gpu.sh [MODEL]          MODEL: a Hugging Face id or a local checkpoint folder
#
# vLLM runs from its own virtual environment (VLLM_VENV), created and filled here when it has no
# `vllm` yet; it never enters quantorch's environment (its numba and transformers pins clash).
# The server command is the one `quantorch serve llm` prints (quantorch.llm.serving.vllm_command).
#
# Environment (all optional):
#   MODEL                   model id or folder [Qwen/Qwen3-8B]; the first argument wins
#   VLLM_VENV               vLLM's own venv [~/.venvs/vllm]
#   VLLM_SPEC               what pip installs there [vllm], e.g. vllm==0.11.0
#   VLLM_PYTHON             interpreter that creates that venv [python3]
#   PYTHON                  quantorch's interpreter [python]
#   PORT                    API port [8000]
#   MAX_MODEL_LEN           context length [16384, quantorch serve llm's default]
#   GPU_MEMORY_UTILIZATION  share of GPU memory vLLM may take [vLLM's default]
#   MAX_CONCURRENCY         llm.max_concurrency of the backtest [the config's default]
#   START, END              backtest period [2021-01-01, 2021-12-31]
#   READY_TIMEOUT_S         seconds to wait for GET /v1/models [900]
#   RESULT_JSON             also write the figures to this JSON file
#   KEEP_WORK               non-empty: keep the work folder (vLLM log, config, report, database)
#   TRAIN                   non-empty: first fine-tune MODEL with `quantorch train-llm` (SFT, then
#                           GRPO, LoRA; docs/llm.md "Fine-tuning with TRL"), time it, then serve
#                           and backtest the merged checkpoint instead of MODEL
#   TRAIN_PYTHON            interpreter of the training environment: quantorch[llm-train] with a
#                           CUDA torch, no vLLM in it [$PYTHON]
#   TRAIN_ARGS              extra train-llm flags [--steps 50 --sft-steps 50 --episodes 400 --bf16]
set -euo pipefail

MODEL=${1:-${MODEL:-Qwen/Qwen3-8B}}
VLLM_VENV=${VLLM_VENV:-$HOME/.venvs/vllm}
VLLM_SPEC=${VLLM_SPEC:-vllm}
VLLM_PYTHON=${VLLM_PYTHON:-python3}
PYTHON=${PYTHON:-python}
PORT=${PORT:-8000}
START=${START:-2021-01-01}
END=${END:-2021-12-31}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-900}

# `python -m quantorch` from a checkout works whether or not quantorch is installed
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WORK=$(mktemp -d "${TMPDIR:-/tmp}/quantorch-llm-gpu.XXXXXX")
LOG="$WORK/vllm.log"
CONFIG="$WORK/config.yaml"
# a fresh database every time: a reused one would answer the prompts from the transcript
# cache and the figures would measure DuckDB, not the GPU
DB="$WORK/llm_gpu.duckdb"
SERVER_PID=""

say() { printf '%s\n' "$*" >&2; }

stop_server() {
    if [[ -z "$SERVER_PID" ]] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
        return 0
    fi
    say "stopping the vLLM server (PID $SERVER_PID)"
    # the server leads its own process group (setsid): signal the group, engine workers too
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null || true
    local waited=0
    while kill -0 "$SERVER_PID" 2>/dev/null && ((waited < 30)); do
        sleep 1
        waited=$((waited + 1))
    done
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_server
    if ((status != 0)) && [[ -s "$LOG" ]]; then
        say "--- last lines of the vLLM log ($LOG) ---"
        tail -n 40 "$LOG" >&2 || true
    fi
    if [[ -n "${KEEP_WORK:-}" ]]; then
        say "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { date +%s.%N; }

# ---- 0. optionally, fine-tune first ----------------------------------------------------------
if [[ -n "${TRAIN:-}" ]]; then
    TRAIN_PYTHON=${TRAIN_PYTHON:-$PYTHON}
    read -r -a train_extra <<<"${TRAIN_ARGS:---steps 50 --sft-steps 50 --episodes 400 --bf16}"
    say "fine-tuning $MODEL (quantorch train-llm ${train_extra[*]})"
    train_started=$(now)
    "$TRAIN_PYTHON" -m quantorch train-llm --base "$MODEL" --out "$WORK/finetuned" \
        "${train_extra[@]}" --json >"$WORK/train.json"
    train_s=$("$PYTHON" -c "print(f'{$(now) - $train_started:.1f}')")
    say "fine-tuned in $train_s s: $WORK/finetuned (adapter/, merged/, provenance.json)"
    MODEL="$WORK/finetuned/merged"
fi

# ---- 1. vLLM in its own environment ----------------------------------------------------------
VLLM="$VLLM_VENV/bin/vllm"
if [[ ! -x "$VLLM" ]]; then
    say "installing $VLLM_SPEC into $VLLM_VENV (vLLM's own environment, never quantorch's)"
    if [[ ! -x "$VLLM_VENV/bin/python" ]]; then
        "$VLLM_PYTHON" -m venv "$VLLM_VENV"
    fi
    "$VLLM_VENV/bin/python" -m pip install --upgrade pip
    "$VLLM_VENV/bin/python" -m pip install "$VLLM_SPEC"
fi
say "vLLM: $("$VLLM_VENV/bin/python" -c 'import vllm; print(vllm.__version__)' 2>/dev/null \
    || echo 'version unknown') at $VLLM"
if [[ -d "$MODEL" ]]; then
    export HF_HUB_OFFLINE=1  # a local checkpoint: never reach for the Hub
fi

# ---- 2. the server command, as quantorch serve llm builds it --------------------------------
serve_args=(serve llm --model "$MODEL" --host 127.0.0.1 --port "$PORT" --vllm "$VLLM" --json)
if [[ -n "${MAX_MODEL_LEN:-}" ]]; then
    serve_args+=(--max-model-len "$MAX_MODEL_LEN")
fi
if [[ -n "${GPU_MEMORY_UTILIZATION:-}" ]]; then
    serve_args+=(--gpu-memory-utilization "$GPU_MEMORY_UTILIZATION")
fi
"$PYTHON" -m quantorch "${serve_args[@]}" >"$WORK/serve.json"
mapfile -d '' -t VLLM_CMD < <("$PYTHON" -c '
import json, sys
sys.stdout.write("".join(arg + "\0" for arg in json.load(open(sys.argv[1]))["command"]))
' "$WORK/serve.json")
BASE_URL=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["config"]["llm"]["base_url"])' \
    "$WORK/serve.json")

# ---- 3. start it and wait for /v1/models -----------------------------------------------------
say "starting: ${VLLM_CMD[*]}"
if command -v setsid >/dev/null 2>&1; then
    setsid "${VLLM_CMD[@]}" >"$LOG" 2>&1 </dev/null &
else
    "${VLLM_CMD[@]}" >"$LOG" 2>&1 </dev/null &
fi
SERVER_PID=$!

ready() {
    "$PYTHON" -c '
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as reply:
    sys.exit(0 if reply.status == 200 else 1)
' "$BASE_URL/models" 2>/dev/null
}
load_started=$(now)
deadline=$((SECONDS + READY_TIMEOUT_S))
until ready; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        say "error: the vLLM server exited before it was ready (see its log below)"
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        say "error: GET $BASE_URL/models did not answer within ${READY_TIMEOUT_S}s" \
            "(raise READY_TIMEOUT_S for a first download)"
        exit 1
    fi
    sleep 2
done
load_s=$(awk -v a="$load_started" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
say "server ready at $BASE_URL after ${load_s}s"

# ---- 4. a config whose llm: section points at it ---------------------------------------------
"$PYTHON" - "$WORK/serve.json" "$CONFIG" "$WORK/reports" "${MAX_CONCURRENCY:-}" <<'PY'
import json
import sys

import yaml

from quantorch.config import default_config_path, load_config

serve_path, config_path, reports_dir, concurrency = sys.argv[1:5]
with open(default_config_path(), encoding="utf-8") as handle:
    data = yaml.safe_load(handle)
data["llm"] = {**(data.get("llm") or {}), **json.load(open(serve_path))["config"]["llm"]}
if concurrency:
    data["llm"]["max_concurrency"] = int(concurrency)
data["reports_dir"] = reports_dir
with open(config_path, "w", encoding="utf-8") as handle:
    yaml.safe_dump(data, handle, sort_keys=False)
load_config(config_path)  # a bad file fails here, before the clock starts
PY

# ---- 5. the one-year backtest, timed ---------------------------------------------------------
say "backtest --orchestrator llm $START..$END"
backtest_started=$(now)
"$PYTHON" -m quantorch backtest --orchestrator llm --start "$START" --end "$END" \
    --config "$CONFIG" --db "$DB" --json >"$WORK/backtest.json"
backtest_s=$(awk -v a="$backtest_started" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
RUN_ID=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["run_id"])' \
    "$WORK/backtest.json")
if [[ ! "$RUN_ID" =~ ^[A-Za-z0-9._-]+$ ]]; then
    say "error: unexpected run id '$RUN_ID' from the backtest"
    exit 1
fi

# ---- 6. figures from the database ------------------------------------------------------------
# ==== SQL: the one place to adapt if the llm orchestrator's tables change ======================
# llm_transcripts holds one row per decision of the llm orchestrator (rounds: model replies,
# cached_rounds: those the transcript cache answered; tokens, cost and latency summed over the
# decision's replies). __RUN_ID__ is replaced by the backtest's run id (checked above to hold
# only [A-Za-z0-9._-]).
STATS_SQL="
SELECT
    (SELECT count(*) FROM decisions WHERE run_id = '__RUN_ID__') AS decisions,
    coalesce(sum(rounds - cached_rounds), 0)  AS llm_requests,
    coalesce(sum(cached_rounds), 0)           AS cached_replies,
    coalesce(sum(corrections), 0)             AS corrections,
    count(fallback)                           AS fallbacks,
    coalesce(sum(prompt_tokens), 0)           AS prompt_tokens,
    coalesce(sum(completion_tokens), 0)       AS completion_tokens,
    coalesce(sum(cost_usd), 0)                AS cost_usd,
    avg(latency_ms)                           AS mean_latency_ms,
    quantile_cont(latency_ms, 0.95)           AS p95_latency_ms
FROM llm_transcripts
WHERE run_id = '__RUN_ID__'
"
# ==== end of SQL ===============================================================================
"$PYTHON" -m quantorch query --db "$DB" --format json "${STATS_SQL//__RUN_ID__/$RUN_ID}" \
    >"$WORK/stats.json"

"$PYTHON" - "$WORK/stats.json" "$WORK/backtest.json" "$backtest_s" "$load_s" "$MODEL" \
    "${RESULT_JSON:-}" <<'PY'
import json
import sys

stats_path, backtest_path, wall, load, model, result_path = sys.argv[1:7]
stats = json.load(open(stats_path))[0]
backtest = json.load(open(backtest_path))
wall_s = float(wall)
tokens = stats["prompt_tokens"] + stats["completion_tokens"]
decisions = stats["decisions"]
figures = {
    "model": model,
    "run_id": backtest["run_id"],
    "period": backtest["period"],
    "server_load_s": float(load),
    "backtest_wall_s": wall_s,
    "decisions": decisions,
    "llm_requests": stats["llm_requests"],
    "cached_replies": stats["cached_replies"],
    "corrections": stats["corrections"],
    "fallbacks": stats["fallbacks"],
    "decisions_per_s": decisions / wall_s,
    "tokens_per_s": tokens / wall_s,
    "completion_tokens_per_s": stats["completion_tokens"] / wall_s,
    "prompt_tokens": stats["prompt_tokens"],
    "completion_tokens": stats["completion_tokens"],
    "cost_usd": stats["cost_usd"],
    "cost_per_decision_usd": stats["cost_usd"] / decisions if decisions else None,
    "mean_latency_ms": stats["mean_latency_ms"],
    "p95_latency_ms": stats["p95_latency_ms"],
    "metrics": backtest["metrics"],
}


def number(value, spec):
    return "n/a" if value is None else format(value, spec)


print(f"model              {model}")
print(f"run                {figures['run_id']} ({figures['period']['start']} to "
      f"{figures['period']['end']})")
print(f"server load        {figures['server_load_s']:.1f} s")
print(f"backtest wall      {wall_s:.1f} s")
print(f"decisions          {decisions:,} ({figures['llm_requests']:,} LLM requests, "
      f"{figures['cached_replies']:,} cached replies)")
print(f"corrections        {figures['corrections']:,} re-prompts, "
      f"{figures['fallbacks']:,} fallbacks (position kept)")
print(f"decisions/s        {figures['decisions_per_s']:.2f}")
print(f"tokens/s           {figures['tokens_per_s']:,.0f} "
      f"(completion {figures['completion_tokens_per_s']:,.0f})")
print(f"tokens             {figures['prompt_tokens']:,} prompt, "
      f"{figures['completion_tokens']:,} completion")
print(f"cost               ${figures['cost_usd']:,.4f} "
      f"(${number(figures['cost_per_decision_usd'], '.6f')} per decision)")
print(f"model wait         mean {number(figures['mean_latency_ms'], ',.0f')} ms, "
      f"p95 {number(figures['p95_latency_ms'], ',.0f')} ms per decision")
print(f"sharpe             {number(figures['metrics'].get('sharpe'), '.2f')}")
if result_path:
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(figures, handle, indent=2)
PY
