#!/usr/bin/env bash
# "Converging to a Lingua Franca" (Zeng et al. 2024) on the test bed: similarity map, per-layer LRDS / SADS, key
# linguistic regions, Table 1 (perplexity and cloze accuracy under deactivation) and the evolution over a training
# trajectory, in one `langneurons lingua-franca` call. The numbers of docs/lingua_franca.md come from it.
#
#   bash experiments/lingua_franca.sh      # from the repository root; ~40 min on the shared 2-core machine
#
# MODEL: the model of the similarity map and Table 1 (default: the bundled 10-language toy Llama).
# TRAJ:  a `toy train --save-steps` run whose checkpoint-*/ folders make the evolution (default: the test bed's
#        runs/testbed/llama-6x1024; checkpoints in step order, the step read from the folder name). Its held-out
#        verses are the bundled model's.
# Data: the last 1,000 verses of ../shared/data/bible/{lang}.txt (lines 6157-7156), which neither model saw:
#   the last 100 are the parallel corpus of the vectors (the paper: 100 verses), the first 900 the perplexity
#   corpus; the cloze task reads its items from the same held-out verses (the first --task-limit of them).
# Everything goes to $OUT (default runs/lingua_franca, git-ignored).
set -euo pipefail
MODEL=${MODEL:-src/langneurons/assets/toy-llama}
TRAJ=${TRAJ:-runs/testbed/llama-6x1024}
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/lingua_franca}
LANGS=${LANGS:-en,zh,fr,es,vi,id,ja,de,ru,ar}
MAX_TOKENS=${MAX_TOKENS:-20000}
TASK_LIMIT=${TASK_LIMIT:-50}
[ -d "$DATA/bible" ] || { echo "needs $DATA/bible (see ../shared/data/README.md)"; exit 2; }
mkdir -p "$OUT/parallel" "$OUT/ppl"
for lang in ${LANGS//,/ }; do
  sed -n 7057,7156p "$DATA/bible/$lang.txt" > "$OUT/parallel/$lang.txt"
  sed -n 6157,7056p "$DATA/bible/$lang.txt" > "$OUT/ppl/$lang.txt"
done
CHECKPOINTS=()
if [ -d "$TRAJ" ]; then
  while IFS= read -r dir; do CHECKPOINTS+=("$dir"); done < <(ls -d "$TRAJ"/checkpoint-* 2>/dev/null | sort -V)
fi
echo "checkpoints: ${CHECKPOINTS[*]:-none}"
nice -n 10 langneurons lingua-franca --model "$MODEL" --parallel "$OUT/parallel" --langs "$LANGS" \
  --ppl-corpus "$OUT/ppl" --max-tokens "$MAX_TOKENS" --random-percent 10 \
  --task cloze --task-data "$DATA" --task-limit "$TASK_LIMIT" --task-batch-size 32 \
  ${CHECKPOINTS[@]:+--checkpoints "${CHECKPOINTS[@]}"} \
  --out "$OUT/result" --force --no-progress
