#!/usr/bin/env bash
# Gradescope runs this once, as root, when the autograder image is built
# (Base image: Ubuntu 22.04 or 24.04). The bundle is unpacked in /autograder/source.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

apt-get update
apt-get install -y --no-install-recommends \
    openjdk-17-jre-headless python3 python3-venv python3-dev build-essential
cd /autograder/source
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --quiet --upgrade pip
# the project (builds the Cython kernels in place) and, on Python 3.10, a TOML reader
/autograder/venv/bin/pip install --quiet -e . 'tomli; python_version < "3.11"'
/autograder/venv/bin/python setup.py build_ext --inplace

# smoke test: the grader's configuration loads and Spark starts
/autograder/venv/bin/python -c "from grading.config import load_config; load_config()"
/autograder/venv/bin/python -c "from spark.session import get_session; get_session('local[2]').stop()"
