#!/usr/bin/env bash
# One GPU benchmark session: the machine, the dataloader alone, then trainer/train.py and any other
# train.py files given, each for SECONDS of training at the gpt2 scale on the offline corpus.
#   scripts/bench_gpu.sh [SECONDS] [OTHER_TRAIN_PY ...]
# Results and full logs go to $OUT (or ./bench-out). Wheels in .whl/ are installed first, for a
# machine that has no package index (see docs/BENCHMARKS.md).
set -uo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
if [[ -n ${1:-} && ! $1 =~ ^[0-9]+$ ]]; then
    echo "error: SECONDS must be a whole number, not '$1' (scripts/bench_gpu.sh --help)" >&2
    exit 2
fi
seconds=${1:-60}
shift || true
out=${OUT:-bench-out}
mkdir -p "$out"
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/bench-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/bench-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 AUTORESEARCH_DATA=${AUTORESEARCH_DATA:-offline}
export AUTORESEARCH_CACHE=${AUTORESEARCH_CACHE:-/tmp/autoresearch-cache}

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv | tee "$out/gpu.txt"
"$python" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__)" | tee -a "$out/gpu.txt"
"$python" scripts/bench_trainer.py --scale gpt2 --loader --seconds 5 | tee "$out/loader.txt"
i=0
for train_py in trainer/train.py "$@"; do
    echo "== $train_py"
    "$python" scripts/bench_trainer.py --scale gpt2 --seconds "$seconds" --train-py "$train_py" \
        --log "$out/run$i.log" | tee "$out/run$i.txt"
    i=$((i + 1))
done
