"""Summary of `experiments/pv_vs_lape.sh`: the two perplexity matrices side by side, and where PV's entries are.

    python experiments/pv_vs_lape_summary.py runs/pv
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

from langneurons.cli.perplexity import format_matrix
from langneurons.sets.parameterset import load_parameters
from langneurons.evaluation.perplexity import load_perplexity, summary


def matrix_summary(out: Path) -> None:
    print("| method | rows with their maximum on the diagonal | mean diagonal | mean off-diagonal | mean random "
          "| diagonal / off-diagonal |")
    print("|---|---|---|---|---|---|")
    for name in ("pv", "lape"):
        s = summary(load_perplexity(out / f"{name}.ppl"))
        off = s["mean_off_diagonal_increase"]
        ratio = f"{s['mean_diagonal_increase'] / off:.1f}x" if off > 0 else "-"
        print(f"| {name.upper()} | {s['row_max_on_diagonal']}/{s['rows']} | {s['mean_diagonal_increase']:+.1%} "
              f"| {off:+.1%} | {s['mean_random_increase']:+.1%} | {ratio} |")


def where_pv_entries_are(out: Path) -> None:
    """Per language: entries, share in attention vs FFN matrices, and per layer."""
    pset = load_parameters(out / "pv.parameters")
    layers = sorted({int(m.group(1)) for name in pset.shapes if (m := re.search(r"\.(\d+)\.", name))})
    print("\n| language | entries | attention | FFN | " + " | ".join(f"layer {i}" for i in layers) + " |")
    print("|---|---|---|---|" + "---|" * len(layers))
    for lang in pset.languages:
        counts = pset.counts(lang)
        total = sum(counts.values()) or 1
        attention = sum(n for name, n in counts.items() if re.search(r"attn|attention", name))
        per_layer = Counter()
        for name, n in counts.items():
            m = re.search(r"\.(\d+)\.", name)
            if m:
                per_layer[int(m.group(1))] += n
        print(f"| {lang} | {total} | {attention / total:.0%} | {1 - attention / total:.0%} | "
              + " | ".join(f"{per_layer[i] / total:.0%}" for i in layers) + " |")


def finetune_table(runs: Path) -> None:
    """Own-language held-out perplexity of the base model and of each one-language fine-tune."""
    import json

    rows = []
    for ft in sorted(runs.glob("ft-*")):
        if not (ft / "heldout_ppl.json").is_file():
            continue
        lang = ft.name[3:]
        tuned = json.loads((ft / "heldout_ppl.json").read_text())["langs"][lang]["model_ppl"]
        init = json.loads((ft / "toy_train_args.json").read_text())["init_from"]
        base = json.loads((Path(init) / "heldout_ppl.json").read_text())["langs"][lang]
        base_ppl = base.get("model_ppl_float16_weights", base["model_ppl"])
        rows.append(f"| {lang} | {base_ppl:.1f} | {tuned:.1f} | {tuned / base_ppl - 1:+.0%} |")
    if rows:
        print("\n| fine-tuned on | base model, held-out ppl | fine-tuned, held-out ppl | change |")
        print("|---|---|---|---|")
        print("\n".join(rows))


def main(out: Path) -> None:
    for name in ("pv", "lape"):
        matrix = load_perplexity(out / f"{name}.ppl")
        print(f"\n{name.upper()}: perplexity (rows: condition, columns: evaluated language)")
        print(format_matrix(matrix))
        print(f"\n{name.upper()}: relative change against normal (rows: whose {'entries are zeroed' if name == 'pv' else 'neurons are deactivated'})\n")
        change = matrix.change(relative=True)
        print("| | " + " | ".join(matrix.languages) + " |")
        print("|---|" + "---|" * len(matrix.languages))
        for r, condition in enumerate(matrix.conditions):
            if condition != "normal":
                cells = [f"**{v:+.1%}**" if condition == lang else f"{v:+.1%}"
                         for lang, v in zip(matrix.languages, change[r].tolist())]
                print(f"| {condition} | " + " | ".join(cells) + " |")
    print()
    matrix_summary(out)
    where_pv_entries_are(out)
    finetune_table(out.parent)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/pv"))
