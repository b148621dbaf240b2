"""``langneurons demo``: the four papers' stories on the bundled toy model and demo corpus, on CPU.

LAPE (record -> identify -> deactivation perplexity matrix -> layers -> steering), Sharing Matters (neuron
types per layer, deactivation by type on a cloze built from the parallel valid part), PLND (importance neurons
and their overlaps) and Lingua Franca (LRDS / SADS per layer, similarity map, key regions), then one HTML report
(:mod:`langneurons.testbed.demo_parts` has the parts). The output folder holds the same artefacts the separate
commands write.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from langneurons.errors import LangNeuronsError

#: The bundled model has only 6 x 1,024 = 6,144 FFN neurons. At the paper's 1% LAPE keeps 61 candidates and a
#: language gets a handful of neurons; at 5% the Latin-script languages still get about 14 each. The demo selects
#: 10% (614 candidates, tens of neurons per language), the rate at which deactivation and steering are plain on the
#: bundled models; docs/toy_models.md shows the 1% and 5% numbers beside it. This is a small-model demo setting:
#: everything else keeps the paper's defaults, and ``langneurons identify`` keeps ``top_rate=0.01``.
DEMO_TOP_RATE = 0.1
DEMO_SEQ_LEN = 64
#: what the demo writes into its output folder
DEMO_ENTRIES = ("stats", "lape.neurons", "ppl", "layers", "steer", "sharing", "plnd.neurons", "plnd_overlap",
                "lingua_franca", "demo.json", "report.html")


def is_demo_run(path: str | Path) -> bool:
    """Whether ``path`` holds a previous demo run and nothing else (so a rerun may replace it)."""
    entries = [p.name for p in Path(path).iterdir() if not p.name.startswith(".")]
    return bool(entries) and all(name in DEMO_ENTRIES for name in entries)


#: the bundled test-bed models: the toy Llama (the demo's default) and its GELU sibling
BUNDLED_MODELS = ("toy-llama", "toy-gpt2")


def bundled_model_path(name: str = "toy-llama") -> Path:
    """Directory of a bundled toy model (``AutoModelForCausalLM.from_pretrained`` loads it): ``toy-llama`` or
    ``toy-gpt2`` (model cards in their ``README.md``)."""
    if name not in BUNDLED_MODELS:
        raise LangNeuronsError(f"no bundled model {name!r}; the bundled models are {', '.join(BUNDLED_MODELS)}")
    return Path(str(resources.files("langneurons") / "assets" / name))


def demo_corpus_path(part: str = "train") -> Path:
    """The bundled demo corpus: ``train`` (for recording) or ``valid`` (for perplexity)."""
    return Path(str(resources.files("langneurons") / "assets" / "demo_corpus" / part))


@dataclass
class DemoResult:
    """Paths of what the demo wrote and the headline numbers."""

    out: Path
    report: Path | None
    summary: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(out: str | Path = "runs/demo", model: str | Path | None = None, corpus: str | Path | None = None,
             valid: str | Path | None = None, top_rate: float = DEMO_TOP_RATE, seq_len: int = DEMO_SEQ_LEN,
             batch_size: int = 16, device: str | None = "cpu", progress: bool = True, parts: list[str] | None = None,
             log: Callable[[str], None] = print) -> DemoResult:
    """Run the demo (every part, or ``parts``) into ``out`` and return what it wrote."""
    import langneurons as ln
    from langneurons.testbed.demo_parts import DemoContext, run_parts

    model_path = bundled_model_path(str(model)) if str(model) in BUNDLED_MODELS else (
        Path(model) if model else bundled_model_path())
    local = model is None or model_path.is_absolute() or model_path.exists() or str(model).startswith(".")
    if local and not (model_path / "config.json").exists():  # (a hub id such as org/name is loaded as it is)
        raise LangNeuronsError(f"no model at {str(model_path)!r} (the bundled toy model is missing from this install)")
    corpus = Path(corpus) if corpus else demo_corpus_path("train")
    valid = Path(valid) if valid else demo_corpus_path("valid")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    loaded = ln.load_model(str(model_path), device=device, dtype="float32")
    seconds = {"load model": time.perf_counter() - start}
    ctx = DemoContext(loaded, out, corpus, valid, top_rate, seq_len, batch_size, progress, log)
    outcomes = run_parts(ctx, parts)
    seconds.update({o.name: o.seconds for o in outcomes})
    summary: dict[str, Any] = {"parts": [asdict(o) for o in outcomes]}
    if "matrix" in ctx.results:
        from langneurons.evaluation.perplexity import summary as perplexity_summary

        summary.update(perplexity_summary(ctx.results["matrix"]))
    (out / "demo.json").write_text(json.dumps({**loaded.provenance(), "version": ln.__version__,
                                               "parameters": {"top_rate": top_rate, "seq_len": seq_len,
                                                              "batch_size": batch_size},
                                               "corpus": str(corpus), "valid": str(valid), **summary,
                                               "seconds": seconds}, indent=1, default=str) + "\n")
    start = time.perf_counter()
    report = _report(out)
    seconds["report"] = time.perf_counter() - start
    ran = [o.name for o in outcomes if o.status == "ran"]
    others = [f"{o.name} {o.status}" for o in outcomes if o.status != "ran"]
    log(f"[demo] parts that ran: {', '.join(ran) or 'none'}" + (f"; {', '.join(others)}" if others else "")
        + f" ({sum(seconds.values()):.0f} s in all)")
    return DemoResult(out, report, summary, seconds)


def _report(out: Path) -> Path:
    from langneurons.report import build_report

    return build_report([out], out / "report.html")
