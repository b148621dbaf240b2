#!/usr/bin/env bash
# PV (parameter variation) next to LAPE on the bundled 10-language toy Llama (LAPE paper, section 3.1 d).
#
#   bash experiments/pv_vs_lape.sh            # from the repository root; about 45 min on 2 CPU cores
#
# 1. fine-tunes the bundled model on one language at a time (150 steps, `toy train --init-from`), never on the
#    model's held-out verses (the last 1,000 references of ../shared/data/bible/refs.txt);
# 2. LAPE's statistics of the base model: `record` on the training verses;
# 3. per selection rate (1%, the paper's, and 5%): PV (`pv identify`, `pv perplexity`: entries zeroed) and LAPE
#    (`identify`, `perplexity`: neurons deactivated) on the same held-out verses, with summary.md per rate;
# 4. the HTML report of everything.
# Everything goes to $OUT (default runs/pv, git-ignored). Fine-tunes already there are reused.
set -euo pipefail
BASE=${BASE:-src/langneurons/assets/toy-llama}
DATA=${DATA:-../shared/data/bible_full}
OUT=${OUT:-runs/pv}
LANGS=${LANGS:-en,zh,fr,ru,es,de,ja,ar,id,vi}
STEPS=${STEPS:-150}
RATES=${RATES:-0.01 0.05}
THREADS=${THREADS:-2}
[ -d "$DATA" ] || { echo "needs $DATA (see ../shared/data/README.md)"; exit 2; }
mkdir -p "$OUT/logs"
REFS=${REFS:-$(dirname "$DATA")/bible/refs.txt}   # the bundled model's held-out verses: its last 1,000 references
[ -f "$REFS" ] || { echo "needs $REFS"; exit 2; }
tail -n 1000 "$REFS" > "$OUT/heldout_refs.txt"

# held-out verses (evaluation) and training verses (LAPE's recording corpus) as {lang}.txt folders
python - "$DATA" "$OUT" "$LANGS" <<'PY'
import sys
from pathlib import Path
from langneurons.testbed.data import read_refs_file, split_language
data, out, langs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
refs = read_refs_file(out / "heldout_refs.txt")
for part in ("train", "heldout"):
    (out / part).mkdir(exist_ok=True)
for lang in langs:
    train, held = split_language(data, lang, holdout_refs=refs)
    (out / "train" / f"{lang}.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    (out / "heldout" / f"{lang}.txt").write_text("\n".join(held) + "\n", encoding="utf-8")
PY

finetuned=()
for lang in ${LANGS//,/ }; do
  if [ ! -f "$OUT/ft-$lang/model.safetensors" ]; then
    langneurons toy train --corpus "$DATA" --langs "$lang" --init-from "$BASE" --steps "$STEPS" --lr 3e-4 \
        --holdout-refs "$OUT/heldout_refs.txt" --threads "$THREADS" --out "$OUT/ft-$lang" --no-progress \
        > "$OUT/logs/ft-$lang.log" 2>&1
  fi
  finetuned+=(--finetuned "$lang=$OUT/ft-$lang")
done

EVAL=(--corpus "$OUT/heldout" --langs "$LANGS" --seq-len 128 --max-tokens 16384 --batch-size 16 --no-progress)
langneurons record --model "$BASE" --corpus "$OUT/train" --langs "$LANGS" --seq-len 128 --max-tokens 100000 \
    --batch-size 16 --no-progress --out "$OUT/lape.stats"
for rate in $RATES; do   # the paper's 1%, and 5% (the demo's rate: clearer effects on a 6-layer model)
  R="$OUT/rate-$rate"
  mkdir -p "$R"
  langneurons pv identify --base "$BASE" "${finetuned[@]}" --top-rate "$rate" --out "$R/pv.parameters"
  langneurons pv perplexity --model "$BASE" --parameters "$R/pv.parameters" "${EVAL[@]}" --out "$R/pv.ppl"
  langneurons identify --stats "$OUT/lape.stats" --method lape --top-rate "$rate" --out "$R/lape.neurons"
  langneurons perplexity --model "$BASE" --neurons "$R/lape.neurons" "${EVAL[@]}" --out "$R/lape.ppl"
  python experiments/pv_vs_lape_summary.py "$R" | tee "$R/summary.md"
done
langneurons report "$OUT" --out "$OUT/report.html"
