"""Set algebra on neuron sets: union, intersection, difference, shared-by-all, layer bands.

What PLND / MWork need ("the language-specific neurons minus those shared by all languages", "without
those overlapping English", "only the attention neurons of layers 8-15") and what Sharing Matters needs
(per-item sets built from masks)::

    specific = neurons - neurons.shared()               # every language minus what all languages share
    no_en = neurons.select(["fr", "zh"]) - neurons.select("en")   # a one-language set applies to every language
    band = neurons.restrict(layers=range(8, 16), sites=["attn.q", "attn.k"])

Languages are matched by name; a set with ONE language (such as ``shared()`` or ``select("en")``) applies
to every language of the other operand (or name it: ``a.difference(b, language="en")``). A union holds the
languages and sites of both operands; an intersection or difference holds those of the left one (a site the
right one lacks counts as empty). Sites present in both must have the same grid. The grids of a result are
always the model's grids, so a result applies to the same model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import torch

from langneurons.errors import LangNeuronsError

if TYPE_CHECKING:
    from langneurons.sets.neuronset import NeuronSet

OPS = ("union", "intersection", "difference")


def _right_language(left: "NeuronSet", right: "NeuronSet", language: str | None, op: str) -> dict[str, str | None]:
    """For each result language, the language of ``right`` it combines with (None: nothing)."""
    if language is not None:
        right._lang(language)
        return {lang: language for lang in left.languages}
    if len(right.languages) == 1:
        return {lang: right.languages[0] for lang in left.languages}
    missing = [lang for lang in left.languages if lang not in right.languages]
    if missing and op != "union":
        raise LangNeuronsError(
            f"{op}: the right-hand set has no language(s) {', '.join(missing)} (has {', '.join(right.languages)}); "
            "select a language with language=... to apply it to every language")
    result = {lang: (lang if lang in right.languages else None) for lang in left.languages}
    if op == "union":
        result.update({lang: lang for lang in right.languages if lang not in result})
    return result


def combine(left: "NeuronSet", right: "NeuronSet", op: str, language: str | None = None) -> "NeuronSet":
    """``left`` op ``right`` per language and site (``op`` in union / intersection / difference)."""
    if op not in OPS:
        raise LangNeuronsError(f"unknown set operation {op!r}; known: {', '.join(OPS)}")
    for site in set(left.sites) & set(right.sites):
        if left.grid(site) != right.grid(site):
            raise LangNeuronsError(f"site {site!r} has grid {left.grid(site)} in one set and {right.grid(site)} in "
                                   "the other: the sets are of different models")
    sites = left.sites + ([s for s in right.sites if s not in left.sites] if op == "union" else [])
    grids = {site: (left.grids.get(site) or right.grids[site]) for site in sites}
    pairing = _right_language(left, right, language, op)

    def mask(neurons: "NeuronSet", lang: str | None, site: str) -> torch.Tensor:
        if lang is None or lang not in neurons.languages or site not in neurons.sites:
            return torch.zeros(grids[site], dtype=torch.bool)
        return neurons.mask(lang, site)

    masks = {}
    for lang, other in pairing.items():
        own = lang if lang in left.languages else None
        masks[lang] = {}
        for site in sites:
            a, b = mask(left, own, site), mask(right, other, site)
            masks[lang][site] = a | b if op == "union" else (a & b if op == "intersection" else a & ~b)
    return left._derived(_ids(masks), grids, {"op": op, "with": right.method, "with_languages": right.languages,
                                              **({"language": language} if language else {})})


def _ids(masks: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, list[torch.Tensor]]]:
    return {lang: {site: [row.nonzero().flatten() for row in mask] for site, mask in by_site.items()}
            for lang, by_site in masks.items()}


def shared(neurons: "NeuronSet", languages: Iterable[str] | None = None, label: str = "shared") -> "NeuronSet":
    """A one-label set (``label``) of the neurons that every one of ``languages`` (default: all) holds."""
    languages = list(neurons.languages if languages is None else languages)
    if not languages:
        raise LangNeuronsError("shared neurons of no languages")
    masks = {}
    for site in neurons.sites:
        common = neurons.mask(languages[0], site)
        for lang in languages[1:]:
            common &= neurons.mask(lang, site)
        masks[site] = common
    return neurons._derived(_ids({label: masks}), neurons.grids, {"op": "shared", "languages": languages})


def restrict(neurons: "NeuronSet", layers: Iterable[int] | None = None, sites: Iterable[str] | None = None
             ) -> "NeuronSet":
    """Only the neurons in ``layers`` of ``sites`` (default: every layer / site); grids are kept."""
    keep_sites = neurons.sites if sites is None else ([sites] if isinstance(sites, str) else list(sites))
    for site in keep_sites:
        neurons.grid(site)  # clear error for an unknown site
    if not keep_sites:
        raise LangNeuronsError("restrict to no sites")
    band = None if layers is None else sorted({int(layer) for layer in layers})
    if band is not None:
        for site in keep_sites:
            count = neurons.grid(site)[0]
            outside = [layer for layer in band if not 0 <= layer < count]
            if outside:
                raise LangNeuronsError(f"layers {outside} are outside the {count} layers of site {site!r}")
    empty = torch.zeros(0, dtype=torch.long)
    result = {lang: {site: [ids if band is None or layer in band else empty
                            for layer, ids in enumerate(neurons.layers(lang, site))] for site in keep_sites}
              for lang in neurons.languages}
    return neurons._derived(result, {site: neurons.grid(site) for site in keep_sites},
                            {"op": "restrict", "layers": band, "sites": keep_sites})
