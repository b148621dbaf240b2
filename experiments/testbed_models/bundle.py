"""float16 copy of a trained test-bed model into the package's assets, with its held-out perplexity.

usage: python bundle.py SRC DST TOKENS_SEEN   e.g. runs/testbed/llama-cont2 src/langneurons/assets/toy-llama 19456000

Writes DST/heldout_ppl.json: per language, the perplexity of the float32 weights (``model_ppl``) and of the bundled
float16 weights, on the held-out verses of runs/testbed/heldout in 128-token windows, next to the add-one unigram
baseline of the bundled toy-llama card (same tokenizer, same training and held-out text). The model card
(DST/README.md) is kept: write it by hand from these numbers.
"""
import json
import math
import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from langneurons.data.corpus import load_corpus
from langneurons.evaluation.perplexity import corpus_nll


def main(src: Path, dst: Path, tokens_seen: int) -> None:
    unigram = json.loads(Path("src/langneurons/assets/toy-llama/heldout_ppl.json").read_text())["langs"]
    tokenizer = AutoTokenizer.from_pretrained(src)
    packed = load_corpus("runs/testbed/heldout", tokenizer, 128)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    half = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float16).float().eval()
    out = {"train_tokens_seen": tokens_seen, "source": str(src),
           "n_params": sum(p.numel() for p in model.parameters()), "langs": {}}
    for lang, windows in packed.windows.items():
        full, n = corpus_nll(model, windows, 32)
        reduced, _ = corpus_nll(half, windows, 32)
        out["langs"][lang] = {"model_ppl": round(math.exp(full / n), 4),
                              "model_ppl_float16_weights": round(math.exp(reduced / n), 4),
                              "unigram_ppl": unigram[lang]["unigram_ppl"], "heldout_tokens": n}
        print(lang, out["langs"][lang], flush=True)
    card = (dst / "README.md").read_text() if (dst / "README.md").exists() else None
    if dst.exists():
        shutil.rmtree(dst)
    AutoModelForCausalLM.from_pretrained(src, dtype=torch.float16).save_pretrained(dst)
    tokenizer.save_pretrained(dst)
    (dst / "heldout_ppl.json").write_text(json.dumps(out, indent=1) + "\n")
    if card is not None:
        (dst / "README.md").write_text(card)
    print(f"{sum(f.stat().st_size for f in dst.iterdir()) / 2**20:.1f} MiB in {dst}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
