"""Summaries of a test-bed evaluation folder (written by lape_check.sh and steer_check.sh).

usage: python summarize.py EVALDIR [EVALDIR ...]   -> prints tables, writes EVALDIR/summary.json
"""
import csv
import json
import sys
from pathlib import Path

import langneurons as ln
from langneurons.evaluation.perplexity import summary


def ppl_block(pdir: Path) -> dict:
    m = ln.load_perplexity(pdir)
    ch = m.change(relative=True)
    s = summary(m)
    s["diag_over_off"] = s["mean_diagonal_increase"] / s["mean_off_diagonal_increase"]
    s["diag_over_random"] = s["mean_diagonal_increase"] / s["mean_random_increase"]
    rows = {}
    normal = m.conditions.index("normal")
    rnd = m.conditions.index("random") if "random" in m.conditions else None
    import math
    for lang in m.languages:
        c = m.languages.index(lang)
        r = m.conditions.index(lang) if lang in m.conditions else None
        off = [float(ch[r, j]) for j in range(len(m.languages)) if j != c] if r is not None else []
        rows[lang] = {
            "normal_ppl": math.exp(float(m.nll[normal, c])),
            "own": float(ch[r, c]) if r is not None else None,
            "off_mean": sum(off) / len(off) if off else None,
            "random": float(ch[rnd, c]) if rnd is not None else None,
            "row_max_on_diag": (int(ch[r].argmax()) == c) if r is not None else None,
        }
    sizes = json.loads((pdir / "meta.json").read_text()).get("neurons", {}).get("sizes")
    return {"summary": s, "langs": rows, "sizes": sizes}


def steer_block(sdir: Path) -> dict:
    with open(sdir / "language_accuracy.csv") as fh:
        rows = list(csv.DictReader(fh))
    return {r[next(iter(r))]: {k: float(v) for k, v in list(r.items())[1:]} for r in rows}


def main() -> None:
    for d in map(Path, sys.argv[1:]):
        out = {}
        for p in sorted(d.glob("ppl-*")):
            if (p / "nll.csv").exists():
                out[p.name] = ppl_block(p)
        for p in sorted(d.glob("steer-*")):
            if (p / "language_accuracy.csv").exists():
                out[p.name] = steer_block(p)
        (d / "summary.json").write_text(json.dumps(out, indent=1))
        print(f"== {d}")
        for name, b in out.items():
            if name.startswith("ppl-"):
                s = b["summary"]
                print(f"{name}: diag {100*s['mean_diagonal_increase']:+.2f}%  off {100*s['mean_off_diagonal_increase']:+.3f}%"
                      f"  random {100*s['mean_random_increase']:+.3f}%  diag/off {s['diag_over_off']:.1f}x"
                      f"  diag/rand {s['diag_over_random']:.1f}x  rowmax {s['row_max_on_diagonal']}/{s['rows']}  sizes {b['sizes']}")
                print("   " + "  ".join(f"{l}:{100*r['own']:+.1f}({r['normal_ppl']:.0f})" for l, r in b["langs"].items()))
            else:
                langs = list(b)
                cols = list(next(iter(b.values())))
                print(f"{name}: " + " | ".join(cols))
                for c in cols:
                    above = sum(b[l][c] > b[l][cols[0]] for l in langs) if c != cols[0] else None
                    print(f"   {c:>14}: " + " ".join(f"{l}:{b[l][c]:.2f}" for l in langs) + (f"  above normal {above}/{len(langs)}" if above is not None else ""))


if __name__ == "__main__":
    main()
