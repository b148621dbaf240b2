"""The parts of ``langneurons demo``: one function per paper, each writing its artefacts into the demo folder.

A part is ``(name, paper, function)``; the function takes a :class:`DemoContext` and returns one line of
findings. :func:`run_parts` runs them in order: a part whose module is not installed is *skipped*, a part that
raises is *failed* (its message is printed and the others still run), so the demo never fails because one
part is missing, and it says which parts ran.

The demo's settings are small-model settings, said where they differ from the papers' defaults: the bundled
model has 6 x 1,024 FFN neurons, and the demo runs in about three minutes on two CPU cores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

#: share of outputs sampled per language when steering (unconditional, the LAPE paper's setting)
STEER_SAMPLES = 12
STEER_STRENGTHS = (1.0, 2.0)
STEER_NEW_TOKENS = 24
#: PLND inputs per language (the paper uses 1,000 documents; the demo corpus has 160 lines per language)
PLND_INPUTS = 48
#: cloze items per language for the Sharing Matters interventions (of the 60 valid lines; 13 conditions x 10
#: languages x 4 options each, so fewer items keep the demo within its three minutes)
SHARING_ITEMS = 24


@dataclass
class DemoContext:
    """What every part reads: the loaded model, the corpora, the output folder and the shared settings."""

    loaded: Any
    out: Path
    corpus: Path
    valid: Path
    top_rate: float
    seq_len: int
    batch_size: int
    progress: bool
    log: Callable[[str], None] = print
    results: dict[str, Any] = field(default_factory=dict)


@dataclass
class PartOutcome:
    """One part's fate: ``ran``, ``skipped`` (not installed) or ``failed``; its finding or the reason."""

    name: str
    paper: str
    status: str
    text: str
    seconds: float = 0.0


def lape_part(ctx: DemoContext) -> str:
    """LAPE (Tang et al. 2024): record, identify, deactivation perplexity matrix, layers, steering."""
    import langneurons as ln
    from langneurons.analysis.layers import layer_distribution
    from langneurons.evaluation.generation import GenerationSettings
    from langneurons.evaluation.perplexity import summary as perplexity_summary
    from langneurons.evaluation.language_accuracy import language_accuracy

    stats = ln.record(ctx.loaded, ctx.corpus, seq_len=ctx.seq_len, batch_size=ctx.batch_size, progress=ctx.progress)
    stats.save(ctx.out / "stats")
    neurons = ln.identify(stats, "lape", top_rate=ctx.top_rate)
    neurons.parameters["why_top_rate"] = (f"the bundled model has only {stats.num_layers * stats.width} neurons; "
                                          f"the paper's 1% would leave a handful per language (see DEMO_TOP_RATE)")
    neurons.save(ctx.out / "lape.neurons")
    matrix = ln.perplexity_matrix(ctx.loaded, ctx.valid, neurons, seq_len=ctx.seq_len, batch_size=ctx.batch_size,
                                  progress=ctx.progress)
    matrix.save(ctx.out / "ppl")
    layer_distribution(neurons).save(ctx.out / "layers")
    settings = GenerationSettings(max_new_tokens=STEER_NEW_TOKENS, sample=True, batch_size=32)
    steering = language_accuracy(ctx.loaded, neurons, stats, unconditional=STEER_SAMPLES,
                                 strength=list(STEER_STRENGTHS), settings=settings, progress=ctx.progress)
    steering.save(ctx.out / "steer")
    ctx.results.update(stats=stats, neurons=neurons, matrix=matrix)
    head = perplexity_summary(matrix)
    raised = {c: len(steering.improved(c)) for c in steering.columns if c != "normal"}
    ctx.log("[demo] LAPE neurons per language: " + ", ".join(f"{k} {n}" for k, n in neurons.sizes().items()))
    return (f"deactivating a language's own neurons raises its perplexity by {head['mean_diagonal_increase']:+.1%} "
            f"(other languages {head['mean_off_diagonal_increase']:+.1%}, random {head['mean_random_increase']:+.1%};"
            f" own language hit hardest in {head['row_max_on_diagonal']}/{head['rows']}); steering raises the "
            f"target language's share for " + ", ".join(f"{n}/{len(steering.languages)} at {c}"
                                                        for c, n in raised.items()))


def sharing_part(ctx: DemoContext) -> str:
    """Sharing Matters (Wang et al. 2024): types per layer on the parallel valid part, interventions on a cloze."""
    from langneurons.analysis.sharing_run import sharing_matters
    from langneurons.methods.neuron_types import TYPES

    result = sharing_matters(ctx.loaded, parallel=ctx.valid, task="cloze", limit=SHARING_ITEMS,
                             batch_size=ctx.batch_size, task_batch_size=ctx.batch_size, max_length=ctx.seq_len,
                             progress=ctx.progress)
    result.save(ctx.out / "sharing", force=True)
    summary = result.summary()
    shares = ", ".join(f"{name} {summary['mean_share'][name]:.1%}" for name in TYPES)
    text = f"neuron types over {summary['items']} items: {shares}"
    deactivation = summary.get("deactivation_mean_accuracy")
    if deactivation:
        text += "; cloze accuracy " + ", ".join(f"{c} {v:.2f}" for c, v in deactivation.items())
    return text


def plnd_part(ctx: DemoContext) -> str:
    """PLND (Zhao et al. 2024): importance of every FFN / attention neuron, the language neurons and overlaps."""
    from langneurons.analysis.overlap import structure_overlap
    from langneurons.methods import get_method
    from langneurons.recording.importance import record_importance

    importance = record_importance(ctx.loaded, ctx.corpus, max_inputs=PLND_INPUTS, max_length=ctx.seq_len,
                                   batch_size=ctx.batch_size, progress=ctx.progress)
    neurons = get_method("plnd").fit(importance).select()
    neurons.save(ctx.out / "plnd.neurons")
    overlap = structure_overlap(neurons)
    overlap.save(ctx.out / "plnd_overlap")
    sizes = neurons.sizes()
    return (f"{sum(sizes.values())} language neurons over {len(neurons.sites)} structures ("
            + ", ".join(f"{k} {n}" for k, n in sizes.items()) + ")")


def lingua_franca_part(ctx: DemoContext) -> str:
    """Lingua Franca (Zeng et al. 2024): similarity map, LRDS / SADS per layer, key linguistic regions."""
    from langneurons.analysis.lingua_franca import lingua_franca

    result = lingua_franca(ctx.loaded, ctx.valid, max_length=ctx.seq_len, batch_size=ctx.batch_size,
                           progress=ctx.progress)
    result.save(ctx.out / "lingua_franca", force=True)
    a = result.alignment
    peak = int(a.layer_sads.argmax())
    return (f"LRDS {a.lrds:.3f}, SADS {a.sads:.3f}; SADS peaks at layer {peak}; key linguistic regions hold "
            f"{result.sklr} neurons")


#: the demo's parts in order: (name, paper, function)
PARTS: list[tuple[str, str, Callable[[DemoContext], str]]] = [
    ("lape", "Tang et al. 2024, language activation probability entropy", lape_part),
    ("sharing", "Wang et al. 2024, Sharing Matters", sharing_part),
    ("plnd", "Zhao et al. 2024, PLND and MWork", plnd_part),
    ("lingua_franca", "Zeng et al. 2024, Converging to a Lingua Franca", lingua_franca_part),
]

def run_parts(ctx: DemoContext, names: list[str] | None = None) -> list[PartOutcome]:
    """Run the parts (all, or ``names``) in order; never raises for a part that is missing or fails."""
    from langneurons.errors import LangNeuronsError

    outcomes = []
    for name, paper, function in PARTS:
        if names is not None and name not in names:
            continue
        start = time.perf_counter()
        try:
            text, status = function(ctx), "ran"
        except ImportError as error:  # the part's module is not in this install
            text, status = f"not installed ({error})", "skipped"
        except (LangNeuronsError, RuntimeError, ValueError) as error:
            text, status = f"{type(error).__name__}: {error}", "failed"
        outcome = PartOutcome(name, paper, status, text, time.perf_counter() - start)
        ctx.log(f"[demo] {name} ({paper}) {status} in {outcome.seconds:.0f} s: {text}")
        outcomes.append(outcome)
    return outcomes
