#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (base image Ubuntu
# 22.04 or 24.04); the bundle is unpacked in /autograder/source. This is the one place for
# the autograder's apt and pip steps. Idempotent: a second run changes nothing.
# AUTOGRADER_ROOT (default /autograder) lets the tests build an imitation elsewhere.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
ROOT="${AUTOGRADER_ROOT:-/autograder}"
SRC="$ROOT/source"
VENV="$ROOT/venv"
PY=/usr/bin/python3   # the distribution's Python: its files are readable by the student user
STUDENT=sparknet-student

system_ready() {  # Java 17+, Python with venv and headers, a C compiler
    java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])' &&
        "$PY" -c 'import ensurepip, os, sysconfig, venv
assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' &&
        command -v cc >/dev/null
}
if system_ready 2>/dev/null; then
    echo "setup: Java 17+, Python with venv and headers and a C compiler are present: no apt"
else
    apt-get update
    apt-get install -y --no-install-recommends \
        openjdk-17-jre-headless python3 python3-venv python3-dev build-essential
fi

# the unprivileged user that runs submitted code (grading/sandbox.py)
id -u "$STUDENT" >/dev/null 2>&1 ||
    useradd --system --no-create-home --shell /usr/sbin/nologin "$STUDENT"

# the venv: readable by all (submitted code runs its Python), writable by root only.
# pip builds the Cython kernels in place, in an isolated build environment that brings
# setuptools, Cython and numpy (a fresh Python 3.12 venv has no setuptools).
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
cd "$SRC"
"$VENV/bin/python" -m pip install --quiet -e . 'tomli; python_version < "3.11"'
"$VENV/bin/python" -c "import util._kernels" # the extension is built
chmod -R a+rX "$VENV"
chmod 0711 "$ROOT"
chmod 0700 "$SRC" # the grader, its configuration and references: root only

# smoke test: the bundled starter grades to 0 points with clean messages, sandboxed
smoke="$(mktemp -d)"
trap 'rm -rf "$smoke"' EXIT
"$VENV/bin/python" -m grading.grade "$SRC/spark" --gradescope --out "$smoke" >"$smoke/log" 2>&1 ||
    { cat "$smoke/log"; echo "setup: the smoke test failed"; exit 1; }
"$VENV/bin/python" - "$smoke/results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
bad = [t["name"] for t in r["tests"] if "GRADER ERROR" in t["output"] or "CRASH" in t["output"]]
assert r["score"] == 0 and not bad, (r["score"], bad)
print(f"setup: smoke test passed: the starter scores 0 on {len(r['tests'])} checks")
PY
