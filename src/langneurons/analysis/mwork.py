"""MWork verification (Zhao et al. 2024, sections 3.2-3.6, Tables 2-5; appendix E, Tables 8-9): deactivate the
language-specific neurons of one structure and layer band at a time, against random neurons of the same size.

The layers are split into three bands: **understanding** (the first layers), **task-solving** and
**generation** (the last layers). The components are ``under`` (every structure of the understanding layers),
``s_attn`` (the attention neurons ``attn.*`` of the task-solving layers), ``s_ffn`` (their FFN neurons
``ffn.*``) and ``gen`` (every structure of the generation layers); a *setting* deactivates a union of
components. The band sizes are parameters; the defaults are the reference code's 8 understanding and 4
generation layers of its 32-layer models (paper Appendix H), scaled to the model's depth:
``round(L * 8 / 32)`` and ``round(L * 4 / 32)`` (at least 1 each), task-solving the layers between.

Every setting runs twice per evaluated language ``x``: ``lang-spec`` deactivates ``x``'s neurons of the setting,
``random`` a seeded random set with the same number of neurons in every site and layer
(:func:`~langneurons.methods.baselines.random_like` with ``per_layer=True``, then the same band restriction).
The language-agnostic checks (Tables 8, 9) run one setting (default: all components but ``s_attn``, the
paper's) with the sets ``no_en_overlap`` (``N_x \\ N_en`` for ``x != en``; for English itself, interpretation:
``N_en`` minus every other language's neurons) and ``no_shared`` (``N_x`` minus the neurons all languages share).

Any metric works through one ``edit(condition, lang, column)`` (the contract of
:func:`~langneurons.evaluation.perplexity.evaluate_conditions` and
:func:`~langneurons.evaluation.tasks.evaluate_task`): perplexity per language and task accuracy. Tables are
in the layout of Tables 2-5: per setting and method the per-language value, English, the non-English mean,
``Δ_en``, ``Δ_non-en`` and ``Δ↑``, the amount by which non-English is hurt more than English (accuracy:
``Δ_en - Δ_non-en``, the paper's; perplexity, relative change: ``Δ_non-en - Δ_en``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from langneurons.errors import LangNeuronsError
from langneurons.sets.neuronset import NeuronSet

COMPONENTS = ("under", "s_attn", "s_ffn", "gen")
#: settings: name -> components (each component alone, all of them, and the paper's "all but S-ATTN")
DEFAULT_SETTINGS: dict[str, tuple[str, ...]] = {
    "under": ("under",), "s_attn": ("s_attn",), "s_ffn": ("s_ffn",), "gen": ("gen",),
    "all": COMPONENTS, "all_but_s_attn": ("under", "s_ffn", "gen"),
}
#: the reference code's bands of its 32-layer models (Appendix H): 8 understanding, 4 generation layers
REFERENCE_LAYERS, REFERENCE_UNDERSTANDING, REFERENCE_GENERATION = 32, 8, 4
KINDS = ("random", "lang-spec")
CHECKS = ("no_en_overlap", "no_shared")


@dataclass(frozen=True)
class LayerBands:
    """The understanding, task-solving and generation layers (0-based) of a model of ``num_layers`` layers."""

    num_layers: int
    understanding: tuple[int, ...]
    task_solving: tuple[int, ...]
    generation: tuple[int, ...]

    def describe(self) -> dict[str, Any]:
        return {"num_layers": self.num_layers, "understanding": list(self.understanding),
                "task_solving": list(self.task_solving), "generation": list(self.generation)}


def _band(spec: Any, num_layers: int, name: str, from_end: bool) -> tuple[int, ...]:
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        count = int(spec)
        if not 0 <= count <= num_layers:
            raise LangNeuronsError(f"the {name} band of {count} layers does not fit {num_layers} layers")
        return tuple(range(num_layers - count, num_layers)) if from_end else tuple(range(count))
    if isinstance(spec, str):
        start, sep, stop = spec.partition(":")
        try:
            layers = tuple(range(int(start), int(stop))) if sep else None
        except ValueError:
            layers = None
        if not layers:
            raise LangNeuronsError(f"the {name} band must be a layer count or START:STOP (0-based, STOP exclusive), "
                                   f"got {spec!r}")
    else:
        layers = tuple(int(layer) for layer in spec)
    outside = [layer for layer in layers if not 0 <= layer < num_layers]
    if outside:
        raise LangNeuronsError(f"the {name} band has layers {outside} outside 0..{num_layers - 1}")
    return tuple(sorted(set(layers)))


def layer_bands(num_layers: int, understanding: Any = None, generation: Any = None, task_solving: Any = None
                ) -> LayerBands:
    """The bands: counts (``understanding`` from the first layer, ``generation`` up to the last), ``"a:b"`` or
    layer lists; defaults scaled from the reference code's 8 / 4 of 32 layers. Overlapping bands are an error."""
    if understanding is None:
        understanding = max(1, round(num_layers * REFERENCE_UNDERSTANDING / REFERENCE_LAYERS))
    if generation is None:
        generation = max(1, round(num_layers * REFERENCE_GENERATION / REFERENCE_LAYERS))
    under = _band(understanding, num_layers, "understanding", from_end=False)
    gen = _band(generation, num_layers, "generation", from_end=True)
    if task_solving is None:
        task = tuple(layer for layer in range(num_layers) if layer not in under and layer not in gen)
    else:
        task = _band(task_solving, num_layers, "task-solving", from_end=False)
    named = {"understanding": under, "task-solving": task, "generation": gen}
    names = list(named)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            common = sorted(set(named[first]) & set(named[second]))
            if common:
                raise LangNeuronsError(f"the {first} band overlaps the {second} band at layer(s) {common}")
    if not task:
        raise LangNeuronsError(f"the bands leave no task-solving layer of {num_layers} (understanding {list(under)}, "
                               f"generation {list(gen)})")
    return LayerBands(num_layers, under, task, gen)


def component_set(neurons: NeuronSet, bands: LayerBands, component: str) -> NeuronSet:
    """The neurons of one component (``under``, ``s_attn``, ``s_ffn``, ``gen``)."""
    if component == "under":
        return neurons.restrict(layers=bands.understanding)
    if component == "gen":
        return neurons.restrict(layers=bands.generation)
    prefix = {"s_attn": "attn.", "s_ffn": "ffn."}.get(component)
    if prefix is None:
        raise LangNeuronsError(f"unknown MWork component {component!r}; choose from {', '.join(COMPONENTS)}")
    sites = [site for site in neurons.sites if site.startswith(prefix)]
    if not sites:
        raise LangNeuronsError(f"component {component} needs {prefix}* neurons; the set has {', '.join(neurons.sites)}")
    return neurons.restrict(layers=bands.task_solving, sites=sites)


def setting_set(neurons: NeuronSet, bands: LayerBands, components: Sequence[str]) -> NeuronSet:
    """The union of ``components``' neurons."""
    if not components:
        raise LangNeuronsError("a setting needs at least one component")
    parts = [component_set(neurons, bands, c) for c in components]
    result = parts[0]
    for part in parts[1:]:
        result = result | part
    return result


def check_sets(neurons: NeuronSet, english: str = "en") -> dict[str, NeuronSet]:
    """The sets of Tables 8 and 9: ``no_en_overlap`` and ``no_shared`` (see the module docstring)."""
    if english not in neurons.languages:
        raise LangNeuronsError(f"the language-agnostic checks need {english!r} in the neuron set "
                               f"(has {', '.join(neurons.languages)})")
    others = [lang for lang in neurons.languages if lang != english]
    if not others:
        raise LangNeuronsError("the language-agnostic checks need a language besides English")
    masks = {}
    for lang in neurons.languages:
        masks[lang] = {}
        for site in neurons.sites:
            own = neurons.mask(lang, site)
            if lang == english:
                other = torch.stack([neurons.mask(o, site) for o in others]).any(0)
            else:
                other = neurons.mask(english, site)
            masks[lang][site] = own & ~other
    no_en = NeuronSet.from_masks(masks, method=neurons.method, source=neurons.source,
                                 parameters={**neurons.parameters, "derived": [
                                     *neurons.parameters.get("derived", []),
                                     {"op": "no_en_overlap", "english": english}]})
    return {"no_en_overlap": no_en, "no_shared": neurons - neurons.shared()}


@dataclass
class DeactivationPlan:
    """Every condition's neuron set: ``sets[condition]`` (``normal`` has none)."""

    conditions: list[str]
    sets: dict[str, NeuronSet]
    bands: LayerBands
    settings: dict[str, tuple[str, ...]]
    meta: dict[str, Any] = field(default_factory=dict)

    def edit(self, model: Any, site_maps: dict | None = None):
        """``edit(condition, lang, column)`` -> context manager deactivating that condition's neurons of ``lang``."""
        from langneurons.interventions.neurons import deactivate

        def opened(condition: str, lang: str, column: int) -> AbstractContextManager:
            if condition not in self.sets:
                raise LangNeuronsError(f"unknown condition {condition!r}")
            return deactivate(model, self.sets[condition], lang, site_map=site_maps)

        return opened

    def sizes(self) -> dict[str, dict[str, int]]:
        return {condition: neurons.sizes() for condition, neurons in self.sets.items()}


def plan_deactivation(neurons: NeuronSet, bands: LayerBands, settings: dict[str, Sequence[str]] | None = None,
                      checks: Sequence[str] = CHECKS, check_setting: str = "all_but_s_attn", english: str = "en",
                      seed: int = 0) -> DeactivationPlan:
    """Conditions ``normal``, ``{setting}:random`` / ``{setting}:lang-spec`` and ``{check}@{setting}:...``."""
    settings = {name: tuple(c) for name, c in (settings or DEFAULT_SETTINGS).items()}
    for name, components in settings.items():
        unknown = [c for c in components if c not in COMPONENTS]
        if unknown:
            raise LangNeuronsError(f"setting {name!r} has unknown component(s) {unknown}; choose from {COMPONENTS}")
    from langneurons.methods.baselines import random_like

    variants = {"lsn": neurons}
    if checks:
        if check_setting not in settings and check_setting not in DEFAULT_SETTINGS:
            raise LangNeuronsError(f"unknown check setting {check_setting!r}")
        found = check_sets(neurons, english)
        unknown = [c for c in checks if c not in found]
        if unknown:
            raise LangNeuronsError(f"unknown check(s) {unknown}; choose from {', '.join(CHECKS)}")
        variants.update({c: found[c] for c in checks})
    conditions, sets = ["normal"], {}
    for variant, base in variants.items():
        random_base = random_like(base, seed=seed, per_layer=True)
        chosen = settings if variant == "lsn" else {check_setting: settings.get(
            check_setting, DEFAULT_SETTINGS.get(check_setting))}
        for name, components in chosen.items():
            prefix = name if variant == "lsn" else f"{variant}@{name}"
            for kind, source in (("random", random_base), ("lang-spec", base)):
                condition = f"{prefix}:{kind}"
                conditions.append(condition)
                sets[condition] = setting_set(source, bands, components)
    return DeactivationPlan(conditions, sets, bands, settings,
                            {"checks": list(checks), "check_setting": check_setting, "seed": seed,
                             "english": english})


def split_condition(condition: str) -> tuple[str, str]:
    """``"all_but_s_attn:lang-spec"`` -> ``("all_but_s_attn", "lang-spec")``; ``normal`` -> ``("normal", "")``."""
    name, _, kind = condition.rpartition(":")
    return (condition, "") if not name else (name, kind)
