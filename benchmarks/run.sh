#!/usr/bin/env bash
# Run the jobs benchmark against the `oban` package (Oban for Python) as well as bridge.
#
# The oban package needs Python >= 3.12 and must not share bridge's environment, so it gets a
# virtualenv of its own, made on first use: .bench-venv-oban at the repository root (git-ignored),
# or $OBAN_VENV. Every argument is passed on to bench_jobs.py, e.g.
#
#   benchmarks/run.sh                  # print the table
#   benchmarks/run.sh --write-docs     # ... and update the "Jobs" section of docs/performance.md
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${OBAN_VENV:-.bench-venv-oban}"
OBAN_VERSION="${OBAN_VERSION:-0.7.0}"

is_312() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1
}

if [ ! -x "$VENV/bin/python" ]; then
    PY="${PYTHON312:-}"
    if [ -z "$PY" ]; then
        for candidate in "$HOME"/.pyenv/versions/3.12.*/bin/python python3.12 python3.13 python3; do
            if is_312 "$candidate"; then
                PY="$candidate"
                break
            fi
        done
    fi
    if [ -z "$PY" ] || ! is_312 "$PY"; then
        echo "run.sh: the oban package needs Python >= 3.12; set PYTHON312=/path/to/python3.12" >&2
        exit 1
    fi
    echo "run.sh: making $VENV with $PY and oban==$OBAN_VERSION" >&2
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "oban==$OBAN_VERSION"
fi

# The command the results say they came from is this one, not the python line below.
BENCH_COMMAND="benchmarks/run.sh${*:+ $*}"
export BENCH_COMMAND
exec "${PYTHON:-python}" benchmarks/bench_jobs.py --oban-python "$VENV/bin/python" "$@"
