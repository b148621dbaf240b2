#!/bin/bash
# Throughput of candidate toy-model configs: 40 steps each at --threads 1, with and without --bf16.
# usage: throughput.sh  (writes runs/testbed/throughput/<name>/ and .log)
cd /work/main && . .venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
T=runs/testbed/throughput; mkdir -p $T
run() { name=$1; shift
  langneurons toy train --corpus /work/shared/data/bible_full --langs en,zh,fr,es,vi,id,ja,de,ru,ar \
    --out $T/$name --vocab-size 10000 --seq-len 128 --batch-size 16 --steps 40 --warmup 10 --threads 1 \
    --holdout-refs runs/testbed/heldout_refs.txt --eval-every 1000 --eval-tokens 256 "$@" > $T/$name.log 2>&1
  echo "$name $(tr '\r' '\n' < $T/$name.log | grep 'toy train' | tail -1)"
}
for cfg in "$@"; do eval run $cfg; done
