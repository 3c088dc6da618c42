#!/usr/bin/env bash
# Create .venv and install spacy-kogner with every extra (training, KG teacher, Ray, BioC, tests)
# and the pinned dependencies in one resolver run.
# torch is pinned to the 2.13.0 CPU wheel; nothing else is downloaded at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip>=24"
.venv/bin/python -m pip install --quiet -e ".[backbone,train,kg,ann,ray,annotate,test]"
