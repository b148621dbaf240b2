#!/bin/bash
# LAPE pipeline on one test-bed model: record on training verses, identify (top rate 0.05 and 0.01),
# perplexity matrices on the held-out verses, optional steering (unconditional, strengths 1 2 5, random control).
# usage: evaluate.sh MODEL OUT [ppl|steer|all] [STEER_N]
# env: PPL_TOKENS (held-out tokens per language, default 16384), RATES (default "0.05 0.01")
cd /work/main && . .venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
M=$1; O=$2; WHAT=${3:-ppl}; N=${4:-100}; T=runs/testbed
mkdir -p $O
LANGS=en,zh,fr,es,vi,id,ja,de,ru,ar
if [ ! -f $O/stats/meta.json ] && [ ! -d $O/stats ]; then
  langneurons record --model $M --corpus $T/record_corpus --langs $LANGS --seq-len 128 --max-tokens 204800 \
    --batch-size 16 --out $O/stats --no-progress || exit 1
fi
for r in ${RATES:-0.05 0.01}; do
  [ -d $O/lape-$r.neurons ] || langneurons identify --stats $O/stats --method lape --top-rate $r --out $O/lape-$r.neurons || exit 1
done
if [ $WHAT = ppl ] || [ $WHAT = all ]; then
  for r in ${RATES:-0.05 0.01}; do
    [ -f $O/ppl-$r/nll.csv ] || langneurons perplexity --model $M --corpus $T/heldout --langs $LANGS --seq-len 128 \
      --neurons $O/lape-$r.neurons --out $O/ppl-$r --batch-size 16 --no-progress --max-tokens ${PPL_TOKENS:-16384} || exit 1
  done
fi
if [ $WHAT = steer ] || [ $WHAT = all ]; then
  [ -d $O/random-0.05.neurons ] || python -c "import langneurons as ln; ln.random_like(ln.load_neurons('$O/lape-0.05.neurons'), seed=0).save('$O/random-0.05.neurons')"
  for kind in lape random; do
    [ -f $O/steer-$kind/language_accuracy.csv ] || langneurons steer --model $M --neurons $O/$kind-0.05.neurons --stats $O/stats \
      --unconditional $N --max-new-tokens 64 --batch-size 50 --strength 1 2 5 --out $O/steer-$kind --no-progress || exit 1
  done
fi
python experiments/testbed_models/summarize.py $O
