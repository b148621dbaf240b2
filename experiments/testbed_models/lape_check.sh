#!/bin/bash
# LAPE on one test-bed model: record 51,200 tokens per language of the training verses, LAPE at each rate of
# RATES (default 0.05 and 0.01), the deactivation matrix on 16,384 held-out tokens per language, then summarize.py.
# usage: [RATES="0.05 0.1"] lape_check.sh MODEL OUT
#   (runs/testbed/record_corpus and heldout: the verses train.sh trained on and held out; OUT/stats is reused)
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
M=${1}; O=${2}; T=runs/testbed; L=en,zh,fr,es,vi,id,ja,de,ru,ar
mkdir -p $O
[ -f $O/stats/meta.json ] || langneurons record --model $M --corpus $T/record_corpus --langs $L --seq-len 128 \
  --max-tokens 51200 --batch-size 16 --out $O/stats --no-progress --force || exit 1
for r in ${RATES:-0.05 0.01}; do
  langneurons identify --stats $O/stats --method lape --top-rate $r --out $O/lape-$r.neurons --force || exit 1
  langneurons perplexity --model $M --corpus $T/heldout --langs $L --seq-len 128 --neurons $O/lape-$r.neurons \
    --out $O/ppl-$r --batch-size 16 --no-progress --max-tokens 16384 --force || exit 1
done
python experiments/testbed_models/summarize.py $O
