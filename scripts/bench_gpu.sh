#!/usr/bin/env bash
# One GPU benchmark session: the machine, the dataloader alone, then trainer/train.py and any other
# train.py files given, each for SECONDS of training at the gpt2 scale on the offline corpus.
#   scripts/bench_gpu.sh [SECONDS] [OTHER_TRAIN_PY ...]
# Two files go to $OUT (or ./bench-out): summary.txt (each step's figures or error) and runs.log
# (every run's full output, written as it runs). Wheels in .whl/ are installed first, for a
# machine that has no package index (see docs/BENCHMARKS.md). Exits 1 if any step failed.
set -uo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
if [[ -n ${1:-} && ! $1 =~ ^[1-9][0-9]*$ ]]; then
    echo "error: SECONDS must be a whole number above 0, not '$1' (scripts/bench_gpu.sh --help)" >&2
    exit 2
fi
seconds=${1:-60}
shift || true
out=${OUT:-bench-out}
mkdir -p "$out"
summary=$out/summary.txt
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/bench-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/bench-site${PYTHONPATH:+:$PYTHONPATH}
fi
# A GPU run that found no GPU would train the gpt2 scale on the CPU for the whole session: stop at
# import instead (the harness's check), and before anything, say what is missing.
export PYTHONUNBUFFERED=1 AUTORESEARCH_DATA=${AUTORESEARCH_DATA:-offline} AUTORESEARCH_REQUIRE_GPU=1
export AUTORESEARCH_CACHE=${AUTORESEARCH_CACHE:-/tmp/autoresearch-cache}
if ! "$python" -c "import rustbpe, tiktoken, pyarrow, torch; assert torch.cuda.is_available(), 'torch sees no GPU'" \
    2>&1 | tee "$summary"; then
    echo "error: this machine cannot run the benchmark (the line above says why; no rustbpe: copy .whl/ with its wheel along)" |
        tee -a "$summary" >&2
    exit 1
fi

failed=0
step() {  # step NAME COMMAND...: its output (errors too) into the summary; a failure is noted
    echo "== $1" | tee -a "$summary"
    shift
    "$@" 2>&1 | tee -a "$summary"
    local status=${PIPESTATUS[0]}
    if [[ $status -ne 0 ]]; then
        echo "FAILED (exit $status)" | tee -a "$summary"
        failed=1
    fi
}
step machine nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv
step python "$python" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__)"
step loader "$python" scripts/bench_trainer.py --scale gpt2 --loader --seconds 5
for train_py in trainer/train.py "$@"; do
    step "$train_py" "$python" scripts/bench_trainer.py --scale gpt2 --seconds "$seconds" \
        --train-py "$train_py" --log "$out/runs.log"
done
exit "$failed"
