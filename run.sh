#!/usr/bin/env bash
# One command on a fresh machine: install, then run the whole workflow on its default profile.
#   ./run.sh                       # profile "quick" (every trained system capped at 12 minutes; 55 min on a 2-core AMD EPYC)
#   ./run.sh --vars.profile smoke  # a few minutes
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
export KOGNER_ASSETS_MIRROR="${KOGNER_ASSETS_MIRROR:-$(cd .. && pwd)/shared/data}"
# The workflow's first step (`assets`) links the mirror's files (or downloads them) and checks md5s.
.venv/bin/python -m spacy project run all . "$@"
