#!/usr/bin/env bash
# GPU verification (issue 5): the one script to run on a machine with an NVIDIA GPU.
#
#   OUT=/path/for/logs bash benchmarks/device_check.sh      # from anywhere; runs in the repo root
#
# Steps: install Hydra from local wheels, nvidia-smi, `python3 -m avatar`, `pytest -m gpu`,
# `benchmarks/run.py --gpu`. Each step is time-boxed and the whole run stops by DEADLINE_S
# (400 s), so it ends within 7 minutes even if a step hangs. Every step runs even if an
# earlier one failed; the exit status is non-zero if any failed (or pytest ran no test).
#
# Needs python3 with torch, nvidia-ml-py, PyYAML, pytest and hypothesis, and no network:
# hydra-core 1.3.8, omegaconf 2.3.1 and antlr4-python3-runtime 4.9.3 come from .whl/ in the
# repo root (git-ignored; carry it to the machine). To make them, on a machine with PyPI:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       hydra-core==1.3.8 omegaconf==2.3.1 -d .whl
#   pip wheel --no-deps antlr4-python3-runtime==4.9.3 -w .whl
# Where Hydra is already installed (PYTHON=.venv/bin/python, say), set SKIP_WHEELS=1.
#
# Writes 7 files to $OUT, flat: install.log nvidia-smi.log status.log pytest-gpu.log
# benchmark.log <machine>.md (the benchmark's tables) summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:?set OUT to the folder for the logs}
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/avatar-site}
DEADLINE_S=${DEADLINE_S:-400}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
started=$(date +%s)
failed=0

# step NAME LIMIT_S COMMAND...: run COMMAND under `timeout`, log to $OUT/NAME.log, record rc.
step() {
    local name=$1 limit=$2 left rc t0
    shift 2
    left=$((started + DEADLINE_S - $(date +%s)))
    ((limit > left)) && limit=$left
    if ((limit < 5)); then
        echo "$name: SKIPPED (the run's ${DEADLINE_S} s are used up)" | tee -a "$SUMMARY"
        failed=1
        return
    fi
    echo "=== $name (at most ${limit} s): $*"
    t0=$(date +%s)
    timeout -k 5 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    rc=$?
    ((rc == 124 || rc == 137)) && echo "$name: timed out after ${limit} s" >>"$OUT/$name.log"
    echo "$name: rc=$rc in $(($(date +%s) - t0)) s" | tee -a "$SUMMARY"
    ((rc != 0)) && failed=1
}

if [[ -z ${SKIP_WHEELS:-} ]]; then
    # pip where it works; the wheels are pure Python, so unpacking them is the fallback.
    step install 40 bash -c '"$0" -m pip install -q --no-index --no-deps --target "$1" .whl/*.whl ||
        "$0" -c "import glob, sys, zipfile
for wheel in glob.glob(\".whl/*.whl\"): zipfile.ZipFile(wheel).extractall(sys.argv[1])" "$1"' \
        "$PY" "$SITE"
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - >>"$OUT/install.log" 2>&1 <<'EOF'
import importlib.metadata as md, platform
print("python", platform.python_version())
for dist in ("hydra-core", "omegaconf", "antlr4-python3-runtime", "PyYAML", "nvidia-ml-py",
             "torch", "pytest", "hypothesis"):
    try:
        print(dist, md.version(dist))
    except md.PackageNotFoundError:
        print(dist, "NOT INSTALLED")
EOF

step nvidia-smi 15 bash -c 'nvidia-smi; nvidia-smi -L;
    nvidia-smi --query-gpu=index,name,memory.total,memory.used,memory.free,driver_version --format=csv'
step status 40 "$PY" -m avatar
step pytest-gpu 120 "$PY" -m pytest -m gpu -v -p no:cacheprovider -rs
step benchmark 170 "$PY" benchmarks/run.py --gpu --results-dir "$OUT"

echo "total: $(($(date +%s) - started)) s, $([[ $failed == 0 ]] && echo ok || echo FAILED)" |
    tee -a "$SUMMARY"
exit "$failed"
