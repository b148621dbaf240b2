#!/usr/bin/env bash
# PLND and the MWork workflow (Zhao et al. 2024) on a test-bed model: one command, one run directory.
#
#   bash experiments/plnd_testbed.sh            # from the repository root; ~1 h on the shared 2-core machine
#   MODEL=path/to/other/testbed OUT=runs/plnd-other bash experiments/plnd_testbed.sh
#
# Identification corpus: the first 6,156 verses of ../shared/data/bible/{lang}.txt (windows of 128 tokens, 100
# per language); evaluation (perplexity, the cloze task, the layer-language prompts): the last 1,000 verses
# (lines 6157-7156, held out from every test-bed model). Writes $OUT/{importance, plnd.neurons, overlap,
# layers_*, mwork, layer_language, report.html}; docs/plnd.md quotes its numbers.
set -euo pipefail
MODEL=${MODEL:-src/langneurons/assets/toy-llama}
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/plnd}
LANGS=${LANGS:-en,zh,fr,es,vi,id,ja,de,ru,ar}
INPUTS=${INPUTS:-100}
CLOZE=${CLOZE:-50}
[ -d "$DATA/bible" ] || { echo "needs $DATA/bible (see ../shared/data/README.md)"; exit 2; }

langneurons plnd paper --model "$MODEL" --langs "$LANGS" \
  --corpus "$DATA/bible" --lines 0:6156 --mode windows --max-length 128 --max-inputs "$INPUTS" \
  --eval-corpus "$DATA/bible" --eval-lines 6156:7156 --seq-len 128 --max-tokens 4096 \
  --task cloze --data "$DATA" --limit "$CLOZE" --batch-size 32 \
  --prompt-limit 30 --prompt-fraction 0.5 --max-new-tokens 16 --top-k 10 \
  --out "$OUT" --force --no-progress "$@"
