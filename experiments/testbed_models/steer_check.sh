#!/bin/bash
# Steering on one test-bed model (LAPE section 3.3.4): each language's neurons set to strength x that language's
# mean activation, at strengths 1, 2 and 5; N unconditional samples (from <s> alone) per language, and the first 12
# characters of 48 held-out English verses (runs/testbed/prompts/en.txt) as prompts in another language; a seeded
# random set of the same sizes as the control; then summarize.py.
# usage: [N=30 RATE=0.05] steer_check.sh MODEL OUT   (OUT holds stats/ and lape-RATE.neurons, from lape_check.sh)
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
M=${1}; O=${2}; R=${RATE:-0.05}; N=${N:-30}
python -c "import langneurons as ln; ln.random_like(ln.load_neurons('$O/lape-$R.neurons'), seed=0).save('$O/random-$R.neurons')" || exit 1
for kind in lape random; do
  langneurons steer --model $M --neurons $O/$kind-$R.neurons --stats $O/stats --unconditional $N --max-new-tokens 32 \
    --batch-size 64 --strength 1 2 5 --out $O/steer-$kind --no-progress --force || exit 1
  langneurons steer --model $M --neurons $O/$kind-$R.neurons --stats $O/stats --prompts runs/testbed/prompts \
    --prompt-language en --template "{question}" --prompt-chars 12 --sample --max-new-tokens 32 --batch-size 48 \
    --strength 1 2 5 --out $O/steer-prompts-$kind --no-progress --force || exit 1
done
python experiments/testbed_models/summarize.py $O
