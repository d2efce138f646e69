#!/usr/bin/env bash
# Serve the simulation LLM behind the OpenAI-compatible API the search backends speak, and wait until it
# answers /health. Each engine lives in its own environment (they pin their own torch/transformers):
#
#   scripts/serve_simulator.sh vllm   MODEL [PORT] [-- extra vllm serve flags]
#   scripts/serve_simulator.sh sglang MODEL [PORT] [-- extra sglang.launch_server flags]
#   scripts/serve_simulator.sh builtin MODEL [PORT] [-- extra zerosearch.simulation.server flags]
#
# Environment: PYTHON (the interpreter of the engine's environment; default: python3 on PATH), HOST (default
# 127.0.0.1: local only), SERVED_NAME (default: simulator), TP (tensor parallel size, default 1), DP (SGLang
# data-parallel copies, default 1), MEM (the engine's share of GPU memory, default 0.5), HEALTH_TIMEOUT
# (seconds to wait for /health, default 600), GPUS (the devices the engine may use, e.g. 4,5,6,7: it sees only
# those; keep them apart from the trainer's TRAINER_GPUS, docs/gpu.md). The server keeps running in the
# foreground after it is healthy; stop it with Ctrl-C. Its log goes to stdout.
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 2 ]] || usage
engine=$1 model=$2
shift 2
port=6001
if [[ $# -gt 0 && $1 != "--" ]]; then port=$1; shift; fi
[[ $# -gt 0 && $1 == "--" ]] && shift
[[ $port =~ ^[0-9]+$ ]] || { echo "serve_simulator.sh: PORT must be a number, got '$port'" >&2; exit 2; }

if [[ -n ${GPUS:-} ]]; then
  [[ $GPUS =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "serve_simulator.sh: GPUS must be a comma list of GPU ids such as 4,5; got '$GPUS'" >&2; exit 2; }
  export CUDA_VISIBLE_DEVICES=$GPUS
fi
python=${PYTHON:-python3}
host=${HOST:-127.0.0.1}
name=${SERVED_NAME:-simulator}
tp=${TP:-1} dp=${DP:-1} mem=${MEM:-0.5}

case $engine in
  vllm)
    cmd=("$python" -m vllm.entrypoints.openai.api_server --model "$model" --served-model-name "$name"
         --host "$host" --port "$port" --tensor-parallel-size "$tp" --gpu-memory-utilization "$mem" "$@") ;;
  sglang)
    cmd=("$python" -m sglang.launch_server --model-path "$model" --served-model-name "$name"
         --host "$host" --port "$port" --tp-size "$tp" --dp-size "$dp" --mem-fraction-static "$mem" "$@") ;;
  builtin)
    cmd=("$python" -m zerosearch.simulation.server --model "$model" --served-model-name "$name"
         --host "$host" --port "$port" "$@") ;;
  *) echo "serve_simulator.sh: unknown engine '$engine' (vllm, sglang or builtin)" >&2; exit 2 ;;
esac

echo "+ ${cmd[*]}" >&2
"${cmd[@]}" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' INT TERM EXIT

deadline=$(( SECONDS + ${HEALTH_TIMEOUT:-600} ))
healthy() {  # the engine's own interpreter: nothing beyond it is assumed on the machine
  "$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" \
    "http://$host:$port/health" 2> /dev/null
}
until healthy; do
  if ! kill -0 $server 2>/dev/null; then
    code=0; wait $server || code=$?  # (set -e would end the script here without saying why)
    echo "serve_simulator.sh: the $engine server exited (code $code) before answering /health" >&2
    exit 1
  fi
  if (( SECONDS > deadline )); then
    echo "serve_simulator.sh: no answer on http://$host:$port/health after ${HEALTH_TIMEOUT:-600} s" >&2
    exit 1
  fi
  sleep 1
done
echo "serve_simulator.sh: $engine serves '$name' at http://$host:$port (search.urls=[http://$host:$port])" >&2
wait $server
