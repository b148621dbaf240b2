"""Structure-addressed neuron sets (schema 2): sites and grids, version-1 files, set algebra, layer bands."""

from __future__ import annotations

import json

import pytest
import torch

import langneurons as ln
from langneurons.errors import LangNeuronsError
from langneurons.methods.baselines import random_like, random_neuron_set
from langneurons.sets.artefacts import write_artefact
from langneurons.sets.neuronset import NeuronSet, load_neurons

GRIDS = {"ffn.act": (3, 10), "attn.q": (3, 8), "attn.k": (3, 4)}


def random_masks(languages, grids, seed=0, p=0.3):
    generator = torch.Generator().manual_seed(seed)
    return {lang: {site: torch.rand(grid, generator=generator) < p for site, grid in grids.items()}
            for lang in languages}


def addresses(neurons: NeuronSet, lang: str) -> set[tuple[str, int, int]]:
    """The set's neurons of ``lang`` as Python tuples (site, layer, index), read through the public API."""
    return {(site, layer, int(i)) for site in neurons.sites
            for layer, ids in enumerate(neurons.layers(lang, site)) for i in ids}


def mask_addresses(masks: dict[str, torch.Tensor]) -> set[tuple[str, int, int]]:
    return {(site, int(l), int(i)) for site, mask in masks.items() for l, i in mask.nonzero().tolist()}


def test_version_1_file_written_the_old_way_loads(tmp_path):
    # a 0.1 artefact, by hand: one int64[n, 2] tensor per language, schema version 1, site/num_layers/width in meta
    pairs = {"en": torch.tensor([[0, 3], [0, 7], [2, 1]]), "fr": torch.tensor([[1, 0]])}
    meta = {"languages": ["en", "fr"], "num_layers": 3, "width": 9, "site": "ffn.down_in", "method": "lape",
            "parameters": {"top_rate": 0.01}, "sizes": {"en": 3, "fr": 1}, "source": {"model": "tiny"}}
    write_artefact(tmp_path / "v1", "neuron_set", 1, {f"neurons.{k}": v for k, v in pairs.items()}, meta)
    assert json.loads((tmp_path / "v1" / "meta.json").read_text())["schema_version"] == 1
    neurons = load_neurons(tmp_path / "v1")
    assert neurons.sites == ["ffn.down_in"] and neurons.site == "ffn.down_in"
    assert (neurons.num_layers, neurons.width) == (3, 9)
    assert [ids.tolist() for ids in neurons.layers("en")] == [[3, 7], [], [1]]
    assert [ids.tolist() for ids in neurons.layers("fr")] == [[], [0], []]
    assert neurons.sizes() == {"en": 3, "fr": 1} and neurons.method == "lape"
    assert neurons.source == {"model": "tiny"} and neurons.parameters == {"top_rate": 0.01}
    # re-saved, it is schema 2 with the 0.1 meta keys kept, and reads back the same
    neurons.save(tmp_path / "v2")
    meta2 = json.loads((tmp_path / "v2" / "meta.json").read_text())
    assert meta2["schema_version"] == 2 and meta2["sites"] == ["ffn.down_in"]
    assert (meta2["site"], meta2["num_layers"], meta2["width"], meta2["sizes"]) == ("ffn.down_in", 3, 9,
                                                                                     {"en": 3, "fr": 1})
    again = load_neurons(tmp_path / "v2")
    assert all(torch.equal(again.mask(lang), neurons.mask(lang)) for lang in ("en", "fr"))


def test_one_site_set_keeps_the_0_1_api():
    layers = {"en": [torch.tensor([4, 1, 1]), torch.tensor([], dtype=torch.long)],
              "zh": [torch.tensor([0]), torch.tensor([5, 2])]}
    neurons = NeuronSet(layers, 2, 6, site="ffn.act")
    assert neurons.site == "ffn.act" and neurons.sites == ["ffn.act"] and neurons.grid() == (2, 6)
    assert [ids.tolist() for ids in neurons.layers("en")] == [[1, 4], []]  # sorted, unique
    assert neurons.sizes() == {"en": 2, "zh": 3}
    assert neurons.layer_counts().tolist() == [[2, 0], [1, 2]]
    expected = torch.zeros(2, 6, dtype=torch.bool)
    expected[0, 1] = expected[0, 4] = True
    assert torch.equal(neurons.mask("en"), expected)
    assert neurons.pairs("zh").tolist() == [[0, 0], [1, 2], [1, 5]]
    neurons.check_shape(2, 6)
    with pytest.raises(LangNeuronsError, match="2 layers x 6 neurons"):
        neurons.check_shape(2, 7)
    with pytest.raises(LangNeuronsError, match="out of range"):
        NeuronSet({"en": [torch.tensor([6]), torch.tensor([])]}, 2, 6)


def test_multi_site_accessors_and_errors_that_name_the_sites():
    masks = random_masks(["en", "fr"], GRIDS, seed=1)
    neurons = NeuronSet.from_masks(masks, method="manual")
    assert neurons.sites == list(GRIDS) and neurons.grids == GRIDS and neurons.num_layers == 3
    for site, grid in GRIDS.items():
        assert neurons.grid(site) == grid
        assert torch.equal(neurons.mask("fr", site), masks["fr"][site])
        assert neurons.layer_counts(site).tolist() == [masks[lang][site].sum(1).tolist() for lang in ("en", "fr")]
    assert neurons.sizes() == {lang: sum(int(m.sum()) for m in masks[lang].values()) for lang in ("en", "fr")}
    assert neurons.sizes("attn.k") == {lang: int(masks[lang]["attn.k"].sum()) for lang in ("en", "fr")}
    for access in (lambda: neurons.site, lambda: neurons.width, lambda: neurons.layers("en"),
                   lambda: neurons.mask("en"), lambda: neurons.layer_counts(), lambda: neurons.check_shape(3, 10)):
        with pytest.raises(LangNeuronsError, match="several sites .*ffn.act, attn.q, attn.k.*site="):
            access()
    with pytest.raises(LangNeuronsError, match="no site 'attn.v'"):
        neurons.layers("en", "attn.v")
    with pytest.raises(LangNeuronsError, match="no language 'de'"):
        neurons.layers("de", "attn.q")


def test_multi_site_save_load_round_trip(tmp_path):
    masks = random_masks(["en", "fr", "zh"], GRIDS, seed=2)
    neurons = NeuronSet.from_masks(masks, method="plnd", parameters={"top_k": 5}, source={"model": "m"})
    neurons.save(tmp_path / "set")
    meta = json.loads((tmp_path / "set" / "meta.json").read_text())
    assert meta["schema_version"] == 2 and meta["sites"] == list(GRIDS)
    assert meta["grids"] == {site: list(grid) for site, grid in GRIDS.items()}
    assert "site" not in meta and "width" not in meta
    assert meta["sizes_by_site"]["attn.q"]["zh"] == int(masks["zh"]["attn.q"].sum())
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "set" / "tensors.safetensors"))
    assert sorted(tensors) == sorted(f"neurons.{lang}.{site}" for lang in masks for site in GRIDS)
    assert tensors["neurons.en.attn.k"].tolist() == masks["en"]["attn.k"].nonzero().tolist()
    loaded = load_neurons(tmp_path / "set")
    assert loaded.sites == neurons.sites and loaded.grids == GRIDS and loaded.method == "plnd"
    for lang in masks:
        assert addresses(loaded, lang) == mask_addresses(masks[lang])


def test_from_masks_with_a_missing_site_and_bad_shapes():
    masks = {"en": {"ffn.act": torch.eye(3, 5, dtype=torch.bool)},
             "fr": {"ffn.act": torch.zeros(3, 5, dtype=torch.bool), "attn.v": torch.ones(3, 2, dtype=torch.bool)}}
    neurons = NeuronSet.from_masks(masks)
    assert neurons.sites == ["ffn.act", "attn.v"] and neurons.size("en", "attn.v") == 0
    assert addresses(neurons, "en") == {("ffn.act", i, i) for i in range(3)}
    with pytest.raises(LangNeuronsError, match="masks of shapes"):
        NeuronSet.from_masks({"en": torch.zeros(3, 5, dtype=torch.bool), "fr": torch.zeros(3, 6, dtype=torch.bool)})
    one = NeuronSet.from_masks({"en": torch.eye(2, 4, dtype=torch.bool)}, site="ffn.down_in")
    assert one.site == "ffn.down_in" and one.width == 4


def test_union_intersection_difference_against_python_sets():
    a_masks = random_masks(["en", "fr", "zh"], {"ffn.act": (3, 10), "attn.q": (3, 8)}, seed=3, p=0.4)
    b_masks = random_masks(["en", "fr", "zh"], {"ffn.act": (3, 10), "attn.k": (3, 4)}, seed=4, p=0.4)
    a, b = NeuronSet.from_masks(a_masks), NeuronSet.from_masks(b_masks)
    union, inter, diff = a | b, a & b, a - b
    assert union.sites == ["ffn.act", "attn.q", "attn.k"] and inter.sites == diff.sites == ["ffn.act", "attn.q"]
    for lang in ("en", "fr", "zh"):
        sa, sb = mask_addresses(a_masks[lang]), mask_addresses(b_masks[lang])
        assert addresses(union, lang) == sa | sb
        assert addresses(inter, lang) == sa & sb
        assert addresses(diff, lang) == sa - sb
    assert diff.parameters["derived"][-1]["op"] == "difference"


def test_shared_and_broadcast_differences():
    masks = random_masks(["en", "fr", "zh"], {"ffn.act": (2, 12), "attn.v": (2, 6)}, seed=5, p=0.6)
    neurons = NeuronSet.from_masks(masks)
    every = {lang: mask_addresses(masks[lang]) for lang in masks}
    common = every["en"] & every["fr"] & every["zh"]
    shared = neurons.shared()
    assert shared.languages == ["shared"] and addresses(shared, "shared") == common and common
    minus_shared = neurons - shared  # PLND: the language-specific neurons minus those every language has
    for lang in masks:
        assert addresses(minus_shared, lang) == every[lang] - common
    no_en = neurons.select(["fr", "zh"]) - neurons.select("en")  # MWork Table 8: without those overlapping English
    assert no_en.languages == ["fr", "zh"]
    for lang in ("fr", "zh"):
        assert addresses(no_en, lang) == every[lang] - every["en"]
    named = neurons.difference(neurons, language="en")
    assert addresses(named, "zh") == every["zh"] - every["en"] and addresses(named, "en") == set()
    assert addresses(neurons.shared(["fr", "zh"]), "shared") == every["fr"] & every["zh"]
    with pytest.raises(LangNeuronsError, match="no language"):
        neurons - NeuronSet.from_masks({k: masks[k] for k in ("en", "fr")})
    other_model = NeuronSet.from_masks({"en": {"ffn.act": torch.zeros(2, 13, dtype=torch.bool)}})
    with pytest.raises(LangNeuronsError, match="different models"):
        neurons | other_model


def test_restrict_to_a_layer_band_and_sites():
    masks = random_masks(["en", "fr"], {"ffn.act": (6, 10), "attn.q": (6, 8), "attn.k": (6, 4)}, seed=6, p=0.5)
    neurons = NeuronSet.from_masks(masks)
    band = neurons.restrict(layers=range(2, 5), sites=["attn.q", "attn.k"])
    assert band.sites == ["attn.q", "attn.k"] and band.grid("attn.q") == (6, 8)  # the model's grid is kept
    for lang in masks:
        expected = {(s, l, i) for s, l, i in mask_addresses(masks[lang]) if s != "ffn.act" and 2 <= l < 5}
        assert addresses(band, lang) == expected
    only_layers = neurons.restrict(layers=[0, 5])
    assert only_layers.sites == neurons.sites
    assert addresses(only_layers, "en") == {a for a in mask_addresses(masks["en"]) if a[1] in (0, 5)}
    ffn = neurons.restrict(sites="ffn.act")
    assert ffn.site == "ffn.act" and torch.equal(ffn.mask("fr"), masks["fr"]["ffn.act"])
    with pytest.raises(LangNeuronsError, match=r"outside the 6 layers"):
        neurons.restrict(layers=range(4, 8))
    with pytest.raises(LangNeuronsError, match="no site 'attn.v'"):
        neurons.restrict(sites=["attn.v"])


def test_reference_masks_stay_for_the_ffn_site(tmp_path):
    masks = random_masks(["en", "fr"], {"ffn.act": (3, 10), "attn.q": (3, 8)}, seed=7)
    neurons = NeuronSet.from_masks(masks)
    path = ln.save_reference_masks(neurons, tmp_path / "x.neuron.pth")  # the one FFN site of a multi-site set
    raw = torch.load(path, weights_only=True)
    assert [[ids.tolist() for ids in lang] for lang in raw] == \
        [[row.nonzero().flatten().tolist() for row in masks[lang]["ffn.act"]] for lang in ("en", "fr")]
    back = ln.load_reference_masks(path, ["en", "fr"], width=10)
    assert back.site == "ffn.act" and torch.equal(back.mask("fr"), masks["fr"]["ffn.act"])
    two_ffn = NeuronSet.from_masks({"en": {"ffn.act": masks["en"]["ffn.act"], "ffn.down_in": masks["en"]["ffn.act"]}})
    with pytest.raises(LangNeuronsError, match="reference masks hold one site"):
        two_ffn.to_reference_masks()


def test_random_like_matches_sizes_per_site_and_layer():
    masks = random_masks(["en", "fr"], {"ffn.act": (4, 50), "attn.q": (4, 20)}, seed=8)
    neurons = NeuronSet.from_masks(masks)
    drawn = random_like(neurons, seed=3)
    assert drawn.sites == neurons.sites and drawn.grids == neurons.grids
    for site in neurons.sites:
        assert drawn.sizes(site) == neurons.sizes(site)
    per_layer = random_like(neurons, seed=3, per_layer=True)
    for site in neurons.sites:
        assert torch.equal(per_layer.layer_counts(site), neurons.layer_counts(site))
    assert addresses(per_layer, "en") != addresses(neurons, "en")
    # a one-site set draws exactly as 0.1 did
    one = neurons.restrict(sites=["ffn.act"])
    old = random_neuron_set(one.sizes(), 4, 50, seed=3, site="ffn.act")
    new = random_like(one, seed=3)
    assert all(torch.equal(old.mask(lang), new.mask(lang)) for lang in one.languages)
    assert new.site == "ffn.act" and new.parameters["matched"] == one.method


def test_analyses_on_one_site_v2_sets_and_a_clear_error_on_several(tmp_path):
    masks = random_masks(["en", "fr"], {"ffn.act": (3, 10), "attn.q": (3, 8)}, seed=9, p=0.5)
    multi = NeuronSet.from_masks(masks)
    multi.save(tmp_path / "multi")
    one = load_neurons(tmp_path / "multi").restrict(sites=["attn.q"])
    distribution = ln.layer_distribution(one)
    assert distribution.counts.tolist() == [masks[lang]["attn.q"].sum(1).tolist() for lang in ("en", "fr")]
    overlap = ln.neuron_overlap(one)
    assert int(overlap.intersection[0, 1]) == int((masks["en"]["attn.q"] & masks["fr"]["attn.q"]).sum())
    with pytest.raises(LangNeuronsError, match="several sites"):
        ln.layer_distribution(multi)


def test_report_renders_each_site_of_a_multi_site_set(tmp_path):
    masks = random_masks(["en", "fr"], {"ffn.act": (2, 10), "attn.k": (2, 4)}, seed=10, p=0.5)
    NeuronSet.from_masks(masks, method="plnd").save(tmp_path / "run" / "plnd.neurons")
    html = ln.build_report(tmp_path / "run").read_text()
    assert "Site ffn.act" in html and "Site attn.k" in html
