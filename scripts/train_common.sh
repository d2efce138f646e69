#!/usr/bin/env bash
# Shared command line of train_grpo.sh / train_ppo.sh / train_reinforce.sh (sourced, with ALGORITHM set).
#
#   bash train_grpo.sh NUM_GPUS_PER_NODE 4 MODEL_PATH /models/Qwen2.5-3B DATA_PATH data/zerosearch \
#       TOTAL_STEPS 203 IP localhost SEARCH_MODE simulate_sft SIMULATION_LLM SimulationLLM_14B \
#       START_THRESHOLD 0 END_THRESHOLD 0.5 SEARCH_ENGINE google MAX_TURNS 5 TOPK 5 -- key=value ...
#
# Pairs are parsed by NAME, in any order; an unknown name is an error. Everything after `--` goes to Hydra
# unchanged (configs/ppo_trainer.yaml). ALGORITHM (configs/algorithm/<name>.yaml) replaces the script's own.
# With no arguments at all, the CPU toy-world demo runs instead.
#
# IP: one host or a comma list (one simulation server per host, balanced by the client). PORT: the servers'
# port, by default 6001 for the simulators (SEARCH_MODE simulate_sft / simulate_prompt) and 8000 for a
# retriever (SEARCH_MODE wiki). SIMULATION_LLM: a label for the experiment name, as in the reference scripts
# (the served model's name is read from the server; `-- search.model=NAME` sets it, checked at start).
# EXPERIMENT_NAME defaults to <model>_<ALGORITHM>_<SEARCH_MODE>_<SIMULATION_LLM>_<start>_<end>_<SEARCH_ENGINE>
# _turns_<max turns>, the reference's naming (the numbers as the run uses them), so runs with other thresholds
# do not share a run folder.
#
# PRESET (default: paper) selects configs/preset/<PRESET>.yaml, e.g. qwen2.5-3b-base with the paper's
# thresholds for that policy. The preset's values win over the script's defaults: only the pairs given here
# override it (`-- --cfg job` prints the resulting config instead of training). PROFILE selects the engine
# recipe configs/profile/<PROFILE>.yaml: `PROFILE gpu` (docs/gpu.md); none = the CPU-safe defaults.
#
# One node shared by simulator and trainer (docs/gpu.md): TRAINER_GPUS 0,1,2,3 makes those devices the only ones
# the trainer and the Ray cluster it starts can see (CUDA_VISIBLE_DEVICES) and sets NUM_GPUS_PER_NODE to their
# count; SIMULATOR_GPUS 4,5,6,7 names the simulator's devices (scripts/serve_simulator.sh: GPUS=4,5,6,7), and a
# device in both lists is refused. TRAINER_GPUS cannot apply when joining a running cluster (RAY_ADDRESS): its
# GPUs were chosen when its nodes started (CUDA_VISIBLE_DEVICES=... ray start ..., docs/multinode.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3

KNOWN="ALGORITHM PRESET PROFILE NUM_GPUS_PER_NODE NNODES TRAINER_GPUS SIMULATOR_GPUS MODEL_PATH DATA_PATH \
TOTAL_STEPS IP PORT SEARCH_MODE SIMULATION_LLM START_THRESHOLD END_THRESHOLD SEARCH_ENGINE RETRIEVER_URL MAX_TURNS TOPK \
PROJECT_NAME EXPERIMENT_NAME"

usage() {  # to stderr after an error; `--help` prints it to stdout
  echo "usage: $(basename "$0") [NAME VALUE]... [-- hydra.key=value ...]"
  echo "names: $KNOWN"
  echo "(no arguments: the CPU toy-world demo; every name is described in scripts/train_common.sh)"
}

# Values checked here, so a typo is named before Python starts: whole numbers >= 1, and thresholds in [0, 1].
POSITIVE_INTEGERS="NUM_GPUS_PER_NODE NNODES TOTAL_STEPS MAX_TURNS TOPK PORT"
FRACTIONS="START_THRESHOLD END_THRESHOLD"
check_value() {  # NAME VALUE
  case " $POSITIVE_INTEGERS " in
    *" $1 "*) [[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "error: $1 must be a whole number >= 1, got '$2'" >&2; exit 2; } ;;
  esac
  case " $FRACTIONS " in
    *" $1 "*)
      if ! [[ "$2" =~ ^(0(\.[0-9]+)?|1(\.0+)?|\.[0-9]+)$ ]]; then
        echo "error: $1 must be a number from 0 to 1, got '$2'" >&2; exit 2
      fi ;;
  esac
  if [[ "$2" == *"'"* && "$2" == *'"'* ]]; then
    echo "error: $1 holds both kinds of quote, which a Hydra value cannot carry: '$2'" >&2; exit 2
  fi
  return 0
}

hydra_quote() {  # VALUE -> a quoted Hydra string, so paths with , = [ ] : or spaces pass through intact
  if [[ "$1" != *"'"* ]]; then printf "'%s'" "$1"; else printf '"%s"' "$1"; fi
}

cd "$ROOT"
if [ "$#" -eq 0 ]; then
  echo "[$(basename "$0")] no arguments: running the CPU toy-world demo (docs/demo.md). For a real run pass" \
    "NAME VALUE pairs, e.g. $(basename "$0") MODEL_PATH /models/Qwen2.5-3B DATA_PATH data/zerosearch ..." \
    "(scripts/train_common.sh lists the names)" >&2
  exec "$PYTHON" -m toyworld.pipeline --algorithm "$ALGORITHM"
fi

declare -A ARG=()
EXTRA=()
while [ "$#" -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; EXTRA=("$@"); break; fi
  name="$1"
  case "$name" in -h|--help) usage; exit 0 ;; esac
  case " $KNOWN " in
    *" $name "*) ;;
    *) echo "error: unknown argument name '$name'" >&2; usage >&2; exit 2 ;;
  esac
  if [ "$#" -lt 2 ] || [ "$2" = "--" ]; then echo "error: '$name' needs a value" >&2; usage >&2; exit 2; fi
  check_value "$name" "$2"
  ARG[$name]="$2"
  shift 2
done

require_config() {  # NAME GROUP VALUE: configs/GROUP/VALUE.yaml must exist, else list the group's files
  if [ ! -f "$ROOT/configs/$2/$3.yaml" ]; then
    echo "error: $1 '$3' has no configs/$2/$3.yaml; available:" \
      $(cd "$ROOT/configs/$2" && ls *.yaml | sed 's/\.yaml$//') >&2
    exit 2
  fi
}
ALGORITHM="${ARG[ALGORITHM]:-$ALGORITHM}"
require_config ALGORITHM algorithm "$ALGORITHM"

for required in MODEL_PATH DATA_PATH; do
  if [ -z "${ARG[$required]:-}" ]; then echo "error: $required is required" >&2; usage >&2; exit 2; fi
done

SEARCH_MODE="${ARG[SEARCH_MODE]:-simulate_sft}"
IP="${ARG[IP]:-127.0.0.1}"
case "$SEARCH_MODE" in wiki) DEFAULT_PORT=8000 ;; *) DEFAULT_PORT=6001 ;; esac
PORT="${ARG[PORT]:-$DEFAULT_PORT}"
URLS=""  # http://host:PORT for every host of IP, comma-separated
IFS=',' read -r -a HOSTS <<< "$IP"
for host in "${HOSTS[@]}"; do
  host="${host// /}"
  [ -n "$host" ] && URLS="${URLS:+$URLS,}'http://$host:$PORT'"
done
PRESET="${ARG[PRESET]:-paper}"
require_config PRESET preset "$PRESET"
if [ -n "${ARG[PROFILE]:-}" ]; then require_config PROFILE profile "${ARG[PROFILE]}"; fi

device_list() {  # NAME LIST: a comma list of distinct GPU ids (0,1,2), printed one per line
  local ids
  if ! [[ "$2" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
    echo "error: $1 must be a comma list of GPU ids such as 0,1,2,3; got '$2'" >&2; exit 2
  fi
  ids=$(tr ',' '\n' <<< "$2")
  if [ "$(sort -u <<< "$ids" | wc -l)" -ne "$(wc -l <<< "$ids")" ]; then
    echo "error: $1 lists a GPU twice: '$2'" >&2; exit 2
  fi
  echo "$ids"
}
if [ -n "${ARG[SIMULATOR_GPUS]:-}" ] && [ -z "${ARG[TRAINER_GPUS]:-}" ]; then
  echo "error: SIMULATOR_GPUS is given without TRAINER_GPUS: name the trainer's GPUs too, so they cannot overlap" >&2
  exit 2
fi
if [ -n "${ARG[TRAINER_GPUS]:-}" ]; then
  TRAINER_IDS=$(device_list TRAINER_GPUS "${ARG[TRAINER_GPUS]}")
  if [ -n "${ARG[SIMULATOR_GPUS]:-}" ]; then
    SIMULATOR_IDS=$(device_list SIMULATOR_GPUS "${ARG[SIMULATOR_GPUS]}")
    SHARED=$(comm -12 <(sort <<< "$TRAINER_IDS") <(sort <<< "$SIMULATOR_IDS") | sort -n | paste -sd, -)
    if [ -n "$SHARED" ]; then
      echo "error: TRAINER_GPUS ${ARG[TRAINER_GPUS]} and SIMULATOR_GPUS ${ARG[SIMULATOR_GPUS]} share GPU(s) $SHARED:" \
        "the simulator's engine and the trainer would fight over their memory" >&2
      exit 2
    fi
  fi
  if [ -n "${RAY_ADDRESS:-}" ]; then
    echo "error: TRAINER_GPUS cannot apply when joining the Ray cluster at RAY_ADDRESS=$RAY_ADDRESS: its GPUs were" \
      "set when its nodes started (CUDA_VISIBLE_DEVICES=... ray start ...; docs/multinode.md)" >&2
    exit 2
  fi
  COUNT=$(wc -l <<< "$TRAINER_IDS")
  if [ -n "${ARG[NUM_GPUS_PER_NODE]:-}" ] && [ "${ARG[NUM_GPUS_PER_NODE]}" != "$COUNT" ]; then
    echo "error: NUM_GPUS_PER_NODE ${ARG[NUM_GPUS_PER_NODE]} differs from the $COUNT TRAINER_GPUS" \
      "${ARG[TRAINER_GPUS]}; give one of them" >&2
    exit 2
  fi
  ARG[NUM_GPUS_PER_NODE]=$COUNT
  export CUDA_VISIBLE_DEVICES="${ARG[TRAINER_GPUS]}"
fi
MODEL_NAME="$(basename "${ARG[MODEL_PATH]}")"
# Interpolations, resolved by the trainer: the name carries the thresholds and turns the run really uses.
RUN_NAME="${MODEL_NAME}_${ALGORITHM}_${SEARCH_MODE}_${ARG[SIMULATION_LLM]:-simulator}_\${curriculum.start}"
RUN_NAME="${RUN_NAME}_\${curriculum.end}_${ARG[SEARCH_ENGINE]:-simulate}_turns_\${agent.max_turns}"
OVERRIDES=(
  "algorithm=$ALGORITHM"
  "preset=$PRESET"
  ${ARG[PROFILE]:+"profile=${ARG[PROFILE]}"}
  "actor_rollout_ref.model.path=$(hydra_quote "${ARG[MODEL_PATH]}")"
  "data.train_files=$(hydra_quote "${ARG[DATA_PATH]}/train.parquet")"
  "data.val_files=[$(hydra_quote "${ARG[DATA_PATH]}/test.parquet")]"
  "trainer.experiment_name=$(hydra_quote "${ARG[EXPERIMENT_NAME]:-$RUN_NAME}")"
)
# Only the pairs given: everything else is the preset's (or the trainer config's) value.
declare -A KEY_OF=(
  [NUM_GPUS_PER_NODE]=trainer.n_gpus_per_node [NNODES]=trainer.nnodes [TOTAL_STEPS]=trainer.total_training_steps
  [PROJECT_NAME]=trainer.project_name [START_THRESHOLD]=curriculum.start [END_THRESHOLD]=curriculum.end
  [MAX_TURNS]=agent.max_turns [TOPK]=agent.topk
)
for name in NUM_GPUS_PER_NODE NNODES TOTAL_STEPS PROJECT_NAME START_THRESHOLD END_THRESHOLD MAX_TURNS TOPK; do
  if [ -n "${ARG[$name]+given}" ]; then
    value=${ARG[$name]}
    [ "$name" = PROJECT_NAME ] && value=$(hydra_quote "$value")
    OVERRIDES+=("${KEY_OF[$name]}=$value")
  fi
done
case "$SEARCH_MODE" in
  simulate_sft|simulate_prompt)
    OVERRIDES+=("search=$SEARCH_MODE" "search.urls=[$URLS]")
    ;;
  google) OVERRIDES+=("search=google") ;;
  wiki) OVERRIDES+=("search=wiki" "search.url=$(hydra_quote "${ARG[RETRIEVER_URL]:-http://${HOSTS[0]// /}:$PORT}")") ;;
  *) echo "error: SEARCH_MODE must be simulate_sft, simulate_prompt, google or wiki; got '$SEARCH_MODE'" >&2; exit 2 ;;
esac
# SEARCH_ENGINE: the engine used for validation (docs/design.md §5: the real engine, or the simulator at noise 0).
case "${ARG[SEARCH_ENGINE]:-}" in
  ""|simulate) ;;
  google) OVERRIDES+=("val_search={name: google}") ;;
  wiki) OVERRIDES+=("val_search={name: wiki, url: $(hydra_quote "${ARG[RETRIEVER_URL]:-http://127.0.0.1:8000}")}") ;;
  *) echo "error: SEARCH_ENGINE must be google, wiki or simulate; got '${ARG[SEARCH_ENGINE]}'" >&2; exit 2 ;;
esac

cd "$ROOT"
if [ -n "${ARG[TRAINER_GPUS]:-}" ]; then
  echo "[$(basename "$0")] trainer GPUs: CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES (${ARG[NUM_GPUS_PER_NODE]} ranks)" >&2
fi
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}" TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
exec "$PYTHON" -m verl.trainer.main_ppo "${OVERRIDES[@]}" "${EXTRA[@]}"
