#!/usr/bin/env bash
# Sharing Matters (Wang et al. 2024) on the test bed: the bundled 10-language toy Llama and its held-out aligned
# verses (lines 6157-7156 of ../shared/data/bible/{lang}.txt, the last 1,000 verses, which no test-bed model saw).
#
#   bash experiments/sharing_matters.sh            # from the repository root; about 45 min on 2 shared CPU cores
#   MODEL=path/to/other/model bash experiments/sharing_matters.sh      # the same on another test-bed model
#
# 1. $OUT/verses: the four neuron types of every held-out verse as written (no task: types, persistence, dead
#    neurons, threshold sweep, language subsets, contribution scores; effective scores and interventions are
#    skipped, since nothing has a gold answer);
# 2. $OUT/cloze: the cloze on the first $LIMIT held-out verses (the verse without its last word; the last word
#    among 4 options): the same tables on the cloze prompts, effective scores for the gold word, and the
#    deactivation (Table 2) and conversion (Table 3) tables with their random controls;
# 3. $OUT/report.html.
# Everything goes to $OUT (default runs/sharing, git-ignored); the held-out verses are copied to $OUT/heldout.
set -euo pipefail
MODEL=${MODEL:-src/langneurons/assets/toy-llama}
DATA=${DATA:-../shared/data/bible}
OUT=${OUT:-runs/sharing}
LANGS=${LANGS:-en,zh,fr,es,vi,id,ja,de,ru,ar}
LIMIT=${LIMIT:-200}
PY=${PY:-python}
[ -d "$DATA" ] || { echo "needs $DATA (see ../shared/data/README.md)"; exit 2; }
mkdir -p "$OUT/heldout"
for lang in ${LANGS//,/ }; do
  sed -n 6157,7156p "$DATA/$lang.txt" > "$OUT/heldout/$lang.txt"
done

$PY -m langneurons sharing --model "$MODEL" --parallel "$OUT/heldout" --langs "$LANGS" \
  --batch-size 40 --out "$OUT/verses" --force --no-progress
$PY -m langneurons sharing --model "$MODEL" --parallel "$OUT/heldout" --langs "$LANGS" --task cloze \
  --limit "$LIMIT" --batch-size 40 --task-batch-size 32 --out "$OUT/cloze" --force --no-progress
$PY -m langneurons report "$OUT"
