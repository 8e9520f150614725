#!/usr/bin/env bash
# The Spark test modules on the lowest supported versions (.ci/lowest.txt: pyspark 3.5.0,
# numpy 1.26.0, ...), in a second environment beside .venv: make test-lowest, and .ci/run.
#
# It tests the committed tree (git archive HEAD), unpacked into $LOWEST_DIR/src, because the
# kernels built there against numpy 1.26 have the same file name as the main checkout's
# in-place util/_kernels*.so (same Python), which must not be overwritten. The venv
# ($LOWEST_DIR/venv) is reused while .ci/lowest.txt is unchanged; the tree is unpacked and
# the kernels rebuilt (without build isolation: with the pinned numpy, Cython, setuptools)
# every time.
#
#   .ci/lowest.sh [pytest arguments...]     LOWEST_DIR (build/lowest), PYTHON (python3)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
DIR=${LOWEST_DIR:-$REPO/build/lowest}
PYTHON=${PYTHON:-python3}
PINS=$REPO/.ci/lowest.txt
VENV=$DIR/venv
SRC=$DIR/src
PY=$VENV/bin/python

# Every test module but these, quick tier (the `slow` and `cluster` tests are left to the main
# environment): so a new module that starts Spark is tried on the lowest versions too (watch the
# time: --durations below). Not here: tests/grading (the grader's sandbox and bundles; the
# course's Spark code it runs is tested by test_steps and test_spark), the benchmarks'
# modules, and test_matrix (in-process, no Spark; numpy 1.26 is tried by the layer, kernel,
# fuzz and data modules).
NOT_HERE=(
    tests/grading
    tests/test_bench.py
    tests/test_scaling.py
    tests/test_matrix.py
)

start=$SECONDS
elapsed() { printf '%d min %02d s' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)); }

git -C "$REPO" rev-parse --verify --quiet HEAD >/dev/null || {
    echo "error: $REPO is not a git checkout with a commit; .ci/lowest.sh tests HEAD" >&2
    exit 1
}
echo "== lowest: testing HEAD $(git -C "$REPO" rev-parse --short HEAD) in $SRC"
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]; then
    echo "   (uncommitted changes are not tested: the tree is HEAD's)"
fi

# The venv, reused while the pins are the same as when it was made.
if [ -x "$PY" ] && cmp -s "$PINS" "$VENV/.pins"; then
    echo "== lowest: reusing $VENV (.ci/lowest.txt unchanged)"
else
    echo "== lowest: creating $VENV with .ci/lowest.txt (pyspark builds a 310 MB wheel the first time)"
    rm -rf "$VENV"
    mkdir -p "$DIR"
    "$PYTHON" -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -r "$PINS"
    cp "$PINS" "$VENV/.pins"
fi
echo "== lowest: venv ready ($(elapsed))"

# The tree and its kernels, built against the venv's numpy (no isolated build environment).
rm -rf "$SRC"
mkdir -p "$SRC"
git -C "$REPO" archive HEAD | tar -x -C "$SRC"
"$PY" -m pip install --quiet --no-build-isolation --no-deps -e "$SRC"
"$PY" -m pip check
(cd "$SRC" && "$PY" -c 'import util._kernels as k; print("== lowest: kernels", k.__file__)')
echo "== lowest: project built ($(elapsed))"

"$PY" "$REPO/.ci/versions.py" "lowest environment ($VENV)"

cd "$SRC"
set +e
# --durations: the slowest tests in the log, to keep this part's time in view
"$PY" -m pytest -p no:cacheprovider -m 'not slow and not cluster' --durations=15 \
    "${NOT_HERE[@]/#/--ignore=}" tests "$@"
status=$?
set -e
echo "== lowest: pytest exit status $status ($(elapsed) in all)"
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
