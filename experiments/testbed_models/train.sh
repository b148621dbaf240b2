#!/bin/bash
# Train one test-bed model in the background (one at a time, 1 thread, passive OpenMP).
# usage: train.sh NAME [toy train options...]   -> runs/testbed/NAME/ and runs/testbed/NAME.log
cd /work/main && . .venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
name=$1; shift
nohup langneurons toy train --corpus /work/shared/data/bible_full --langs en,zh,fr,es,vi,id,ja,de,ru,ar \
  --out runs/testbed/$name --vocab-size 10000 --seq-len 128 --bos-rate 0.5 --batch-size 16 --seed 0 \
  --threads 1 --bf16 --holdout-refs runs/testbed/heldout_refs.txt "$@" > runs/testbed/$name.log 2>&1 &
echo $! > runs/testbed/$name.pid; echo "started $name pid $(cat runs/testbed/$name.pid)"
