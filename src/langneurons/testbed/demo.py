"""``langneurons demo``: the whole LAPE story on the bundled toy model and demo corpus, on CPU.

record (train part of the demo corpus) -> identify (LAPE) -> deactivation perplexity matrix (valid part,
against normal and random) -> layer distribution -> HTML report. The output directory holds the same
artefacts the separate commands write.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from langneurons.errors import LangNeuronsError

#: The bundled model has only 6 x 1,024 = 6,144 FFN neurons, so the paper's 1% would leave about six neurons
#: per language; the demo selects 5% (about 300 neurons) instead. Everything else keeps the paper's defaults,
#: and ``langneurons identify`` keeps ``top_rate=0.01`` as its default.
DEMO_TOP_RATE = 0.05
DEMO_SEQ_LEN = 64
#: what the demo writes into its output folder
DEMO_ENTRIES = ("stats", "lape.neurons", "ppl", "layers", "report.html")


def is_demo_run(path: str | Path) -> bool:
    """Whether ``path`` holds a previous demo run and nothing else (so a rerun may replace it)."""
    entries = [p.name for p in Path(path).iterdir() if not p.name.startswith(".")]
    return bool(entries) and all(name in DEMO_ENTRIES for name in entries)


def bundled_model_path() -> Path:
    """Directory of the bundled toy Llama (``AutoModelForCausalLM.from_pretrained`` loads it)."""
    return Path(str(resources.files("langneurons") / "assets" / "toy-llama"))


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
             batch_size: int = 16, device: str | None = "cpu", progress: bool = True,
             log: Callable[[str], None] = print) -> DemoResult:
    """Run the demo into ``out`` and return what it wrote."""
    import langneurons as ln
    from langneurons.evaluation.perplexity import summary as perplexity_summary

    model_path = Path(model) if model else bundled_model_path()
    if not (model_path / "config.json").exists():
        raise LangNeuronsError(f"no model at {str(model_path)!r} (the bundled toy model is missing from this install)")
    corpus = Path(corpus) if corpus else demo_corpus_path("train")
    valid = Path(valid) if valid else demo_corpus_path("valid")
    out = Path(out)
    seconds: dict[str, float] = {}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = fn()
        seconds[name] = time.perf_counter() - start
        log(f"[demo] {name}: {seconds[name]:.1f} s")
        return result

    loaded = step("load model", lambda: ln.load_model(str(model_path), device=device, dtype="float32"))
    stats = step("record", lambda: ln.record(loaded, corpus, seq_len=seq_len, batch_size=batch_size,
                                             progress=progress))
    stats.save(out / "stats")
    neurons = step("identify", lambda: ln.identify(stats, "lape", top_rate=top_rate))
    neurons.parameters["why_top_rate"] = (f"the bundled model has only {stats.num_layers * stats.width} neurons; "
                                          f"the paper's 1% would leave a handful per language")
    neurons.save(out / "lape.neurons")
    matrix = step("perplexity", lambda: ln.perplexity_matrix(loaded, valid, neurons, seq_len=seq_len,
                                                             batch_size=batch_size, progress=progress))
    matrix.save(out / "ppl")
    step("layer distribution", lambda: _layer_distribution(neurons, out / "layers"))
    report = step("report", lambda: _report(out))
    headline = perplexity_summary(matrix)
    log(f"[demo] languages: {', '.join(stats.languages)}; neurons per language: "
        + ", ".join(f"{lang} {n}" for lang, n in neurons.sizes().items()))
    log(f"[demo] mean PPL increase when a language's own neurons are deactivated: "
        f"{headline['mean_diagonal_increase']:+.1%} (other languages {headline['mean_off_diagonal_increase']:+.1%}, "
        f"random neurons {headline['mean_random_increase']:+.1%}); own language hit hardest in "
        f"{headline['row_max_on_diagonal']}/{headline['rows']} rows")
    return DemoResult(out, report, headline, seconds)


def _layer_distribution(neurons, directory: Path) -> Path:
    from langneurons.analysis.layers import layer_distribution

    return layer_distribution(neurons).save(directory)


def _report(out: Path) -> Path:
    from langneurons.report import build_report

    return build_report([out], out / "report.html")
