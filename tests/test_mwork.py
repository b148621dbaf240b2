"""MWork (Zhao et al. sections 3.2-3.6, Tables 2-5, 8, 9): layer bands, settings, random controls, the tables."""

from __future__ import annotations

import math

import pytest
import torch

import langneurons as ln
from langneurons.analysis.mwork import (
    check_sets,
    component_set,
    layer_bands,
    plan_deactivation,
    setting_set,
)
from langneurons.analysis.mwork_results import MWorkResult, mwork_deactivation
from langneurons.data.corpus import PackedCorpus
from langneurons.evaluation.perplexity import corpus_nll
from langneurons.testbed.tiny import tiny_model


def test_default_bands_scale_the_reference_codes_8_and_4_of_32_layers():
    bands = layer_bands(32)
    assert bands.understanding == tuple(range(8)) and bands.generation == (28, 29, 30, 31)
    assert bands.task_solving == tuple(range(8, 28))
    six = layer_bands(6)  # round(1.5) = 2 understanding, round(0.75) = 1 generation
    assert (six.understanding, six.task_solving, six.generation) == ((0, 1), (2, 3, 4), (5,))
    explicit = layer_bands(6, understanding="0:1", generation=2)
    assert (explicit.understanding, explicit.task_solving, explicit.generation) == ((0,), (1, 2, 3), (4, 5))


@pytest.mark.parametrize("kwargs,message", [
    ({"understanding": "0:4", "generation": "3:6"}, "understanding band overlaps the generation band at layer.*3"),
    ({"understanding": 2, "task_solving": "1:4"}, "understanding band overlaps the task-solving band"),
    ({"understanding": "0:9"}, "outside 0..5"),
    ({"understanding": 7}, "does not fit 6 layers"),
    ({"understanding": 3, "generation": 3}, "no task-solving layer"),
    ({"generation": "x"}, "layer count or START:STOP"),
])
def test_bad_bands_are_one_line(kwargs, message):
    with pytest.raises(ln.LangNeuronsError, match=message) as error:
        layer_bands(6, **kwargs)
    assert "\n" not in str(error.value)


def hand_set() -> ln.NeuronSet:
    """Two languages, 6 layers; FFN (width 4) and attn.q (width 3) neurons in known layers."""
    def layers(spec, count=6):
        return [spec.get(layer, []) for layer in range(count)]

    return ln.NeuronSet({
        "en": {"ffn.down_in": layers({0: [1], 2: [0, 3], 5: [2]}), "attn.q": layers({1: [0], 3: [2], 5: [1]})},
        "fr": {"ffn.down_in": layers({0: [1, 2], 3: [3]}), "attn.q": layers({2: [0], 4: [1, 2]})},
    }, grids={"ffn.down_in": (6, 4), "attn.q": (6, 3)}, method="plnd")


def pairs(neurons, lang, site):
    return [(layer, int(i)) for layer, ids in enumerate(neurons.layers(lang, site)) for i in ids]


def test_components_and_settings_by_hand():
    neurons, bands = hand_set(), layer_bands(6)  # under (0, 1), task (2, 3, 4), gen (5,)
    under = component_set(neurons, bands, "under")
    assert pairs(under, "en", "ffn.down_in") == [(0, 1)] and pairs(under, "en", "attn.q") == [(1, 0)]
    s_attn = component_set(neurons, bands, "s_attn")
    assert s_attn.sites == ["attn.q"] and pairs(s_attn, "en", "attn.q") == [(3, 2)]
    assert pairs(s_attn, "fr", "attn.q") == [(2, 0), (4, 1), (4, 2)]
    s_ffn = component_set(neurons, bands, "s_ffn")
    assert s_ffn.sites == ["ffn.down_in"] and pairs(s_ffn, "en", "ffn.down_in") == [(2, 0), (2, 3)]
    gen = component_set(neurons, bands, "gen")
    assert pairs(gen, "en", "ffn.down_in") == [(5, 2)] and pairs(gen, "en", "attn.q") == [(5, 1)]
    no_attn = setting_set(neurons, bands, ("under", "s_ffn", "gen"))
    assert pairs(no_attn, "en", "attn.q") == [(1, 0), (5, 1)]          # S-ATTN's (3, 2) kept out
    assert pairs(no_attn, "fr", "ffn.down_in") == [(0, 1), (0, 2), (3, 3)]
    assert no_attn.grids == neurons.grids
    with pytest.raises(ln.LangNeuronsError, match="needs attn"):
        component_set(neurons.restrict(sites=["ffn.down_in"]), bands, "s_attn")


def test_language_agnostic_check_sets_by_hand():
    neurons = hand_set()
    checks = check_sets(neurons, "en")
    # fr without what it shares with en: ffn (0, 1) is en's too
    assert pairs(checks["no_en_overlap"], "fr", "ffn.down_in") == [(0, 2), (3, 3)]
    # en without what any other language has: the same (0, 1) goes
    assert pairs(checks["no_en_overlap"], "en", "ffn.down_in") == [(2, 0), (2, 3), (5, 2)]
    # shared by all languages: only ffn (0, 1)
    assert pairs(checks["no_shared"], "fr", "ffn.down_in") == [(0, 2), (3, 3)]
    assert pairs(checks["no_shared"], "en", "attn.q") == pairs(neurons, "en", "attn.q")


def test_plan_random_controls_match_every_site_and_layer():
    neurons, bands = hand_set(), layer_bands(6)
    plan = plan_deactivation(neurons, bands, seed=3)
    assert plan.conditions[0] == "normal" and "all_but_s_attn:lang-spec" in plan.conditions
    assert "no_shared@all_but_s_attn:random" in plan.conditions and len(set(plan.conditions)) == len(plan.conditions)
    for name in plan.sets:
        if name.endswith(":random"):
            spec, rand = plan.sets[name.replace(":random", ":lang-spec")], plan.sets[name]
            for site in spec.sites:
                assert torch.equal(spec.layer_counts(site), rand.layer_counts(site)), (name, site)
    assert not torch.equal(plan.sets["all:random"].mask("en", "ffn.down_in"),
                           plan.sets["all:lang-spec"].mask("en", "ffn.down_in"))


def test_delta_table_layout_by_hand():
    result = MWorkResult(
        ["normal", "all:random", "all:lang-spec"], ["en", "fr", "zh"],
        {"perplexity": torch.tensor([[10.0, 20.0, 40.0], [11.0, 20.0, 40.0], [10.0, 30.0, 80.0]], dtype=torch.float64),
         "task:x": torch.tensor([[0.5, 0.4, 0.3], [0.5, 0.4, 0.2], [0.5, 0.1, 0.1]], dtype=torch.float64)},
        {"perplexity": False, "task:x": True}, {"all:lang-spec": {"en": 1, "fr": 2, "zh": 3}}, 100)
    spec = result.delta_rows("perplexity")[1]
    assert spec[:2] == ["all", "lang-spec"] and spec[2:5] == [0.0, 0.5, 1.0]
    assert spec[5:] == [0.0, 0.75, 0.75]   # Δ_en, Δ_non-en (mean of 0.5, 1.0), Δ↑ = Δ_non-en - Δ_en
    task = result.delta_rows("task:x")[1]
    assert task[5] == 0.0 and task[6] == pytest.approx(-0.25) and task[7] == pytest.approx(0.25)  # Δ_en - Δ_non-en
    assert result.summary()["share_of_neurons"]["all:lang-spec"] == pytest.approx(0.02)


def test_deactivation_rows_equal_deactivating_by_hand():
    model = tiny_model("llama")
    neurons = ln.NeuronSet.from_masks({
        lang: {"ffn.down_in": torch.rand(2, 64, generator=torch.Generator().manual_seed(k)) < 0.3,
               "attn.q": torch.rand(2, 32, generator=torch.Generator().manual_seed(k + 5)) < 0.3}
        for k, lang in enumerate(["en", "fr"])})
    bands = layer_bands(2, understanding=0, generation=1)   # task-solving: layer 0, generation: layer 1
    plan = plan_deactivation(neurons, bands, {"s_attn": ("s_attn",), "gen": ("gen",)}, checks=())
    windows = {lang: torch.randint(3, 300, (2, 8), generator=torch.Generator().manual_seed(9 + k))
               for k, lang in enumerate(["en", "fr"])}
    packed = PackedCorpus(windows, {}, 8, None)

    from langneurons.model.loading import LoadedModel

    result = mwork_deactivation(LoadedModel(model, None, "tiny"), plan, neurons, packed, progress=False)
    for r, condition in enumerate(result.conditions):
        for c, lang in enumerate(result.languages):
            if condition == "normal":
                total, count = corpus_nll(model, windows[lang])
            else:
                with ln.deactivate(model, plan.sets[condition], lang):
                    total, count = corpus_nll(model, windows[lang])
            assert result.values["perplexity"][r, c] == pytest.approx(math.exp(total / count), rel=1e-9)
    assert result.sizes["gen:lang-spec"]["en"] == int(neurons.mask("en", "ffn.down_in")[1].sum()
                                                     + neurons.mask("en", "attn.q")[1].sum())
