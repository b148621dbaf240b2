"""Parameter variation (LAPE paper 3.1 d): rates, selection, parameter sets, reversible zeroing, CLI."""

from __future__ import annotations

import copy
import json
import math
import random
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from langneurons.cli.main import main  # noqa: E402
from langneurons.errors import LangNeuronsError  # noqa: E402
from langneurons.methods.entropy import entropy_select, kth_percentile_value  # noqa: E402
from langneurons.methods.parameter_variation import (  # noqa: E402
    ParameterChanges,
    ParameterVariation,
    change_rates,
    identify_parameters,
    parameter_perplexity_matrix,
    refined_values,
)
from langneurons.methods.streamed_entropy import (  # noqa: E402
    pooled_entropy_select,
    streamed_entropy_select,
    streamed_kth_values,
)
from langneurons.interventions.parameters import zero_parameters  # noqa: E402
from langneurons.sets.parameterset import (  # noqa: E402
    ParameterSet,
    draw_without_replacement,
    from_flat_indices,
    load_parameters,
    random_parameters_like,
)
from langneurons.evaluation.perplexity import corpus_nll, load_perplexity  # noqa: E402
from langneurons.testbed.tiny import TINY_CONFIGS, tiny_model  # noqa: E402
from langneurons.model.weights import considered_parameters  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- rates and refined values, by hand ---------------------------------------------------------------


def test_change_rates_and_refined_values_by_hand():
    base = torch.tensor([1.0, -2.0, 0.5, 4.0])
    tuned = [torch.tensor([1.0, -2.0, 1.0, 4.0]),   # rates 0, 0, 1, 0
             torch.tensor([2.0, -1.0, 0.5, 4.0]),   # rates 1, .5, 0, 0
             torch.tensor([1.5, -3.0, 0.5, 4.0])]   # rates .5, .5, 0, 0
    rates = change_rates(base, tuned, eps=0.0 + 1e-12)
    expected = torch.tensor([[0.0, 0.0, 1.0, 0.0], [1.0, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(rates, expected, atol=1e-9)
    values = refined_values(expected)
    # entry 0: max 1 -> r' = (1, 0, .5) -> (2/3, 0, 1/3); entry 1: (.5, 0, 0) -> (1, 0, 0);
    # entry 2: (0, 1, 1) -> (0, .5, .5); entry 3: unchanged everywhere -> all 0 (0/0 -> 0)
    assert torch.allclose(values, torch.tensor([[2 / 3, 1, 0, 0], [0, 0, .5, 0], [1 / 3, 0, .5, 0]],
                                               dtype=torch.float64))
    assert not torch.signbit(values).any()
    # eps: a base weight of exactly 0 gives |delta| / eps
    assert float(change_rates(torch.zeros(1), [torch.full((1,), 1e-6)], eps=1e-8)[0, 0]) == pytest.approx(100.0)


def _fake_models():
    """Base and three tuned state dicts (2 matrices, 50 entries) with known language-specific entries.

    Every entry changes by a language-dependent noise factor in (1%, 2%); the planted entries of
    language ``k`` are unchanged in ``k``'s model and doubled in the others (``r = (0, 1, 1)``,
    entropy exactly 0, normalised value 1 for ``k``).
    """
    generator = torch.Generator().manual_seed(0)
    shapes = {"layers.0.attn.weight": (4, 5), "layers.0.ffn.weight": (5, 6)}
    base = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    langs = ["aa", "bb", "cc"]
    planted = {"aa": [("layers.0.attn.weight", 3)], "bb": [("layers.0.ffn.weight", 7)],
               "cc": [("layers.0.ffn.weight", 29)]}
    tuned = {}
    for lang in langs:
        tuned[lang] = {}
        for name, weight in base.items():
            factor = 1 + 0.01 * (1 + torch.rand(weight.shape, generator=generator))
            tuned[lang][name] = weight * factor
    for lang, entries in planted.items():
        for name, index in entries:
            for other in langs:
                tuned[other][name].view(-1)[index] = base[name].view(-1)[index] * (1 if other == lang else 2)
    return base, tuned, shapes, planted


def test_hand_made_state_dicts_select_the_planted_entries():
    base, tuned, shapes, planted = _fake_models()
    result = identify_parameters(base, tuned, top_rate=3 / 50, parameters=shapes)
    assert result.languages == ["aa", "bb", "cc"] and result.total == 50
    for lang, entries in planted.items():
        got = {(name, int(i)) for name, ids in result.indices(lang).items() for i in ids}
        assert got == set(entries), lang
    assert result.parameters["selected_before_assignment"] == 3 and result.method == "pv"
    # the same selection by brute force with the shared LAPE code on [K, 1, N]
    values = torch.cat([refined_values(change_rates(base[n], [tuned[k][n] for k in tuned])) for n in shapes], 1)
    brute = entropy_select(values[:, None, :], 3 / 50, 0.95, 0.95)
    assert sorted(brute.selected.tolist()) == sorted(result.flat_indices("aa").tolist()
                                                     + result.flat_indices("bb").tolist()
                                                     + result.flat_indices("cc").tolist())


def test_method_contract_and_errors():
    base, tuned, shapes, _ = _fake_models()
    method = ParameterVariation(top_rate=0.1)
    with pytest.raises(LangNeuronsError, match="select"):
        method.select()
    with pytest.raises(LangNeuronsError, match="ParameterChanges"):
        method.fit(object())
    with pytest.raises(LangNeuronsError, match="at least 2"):
        ParameterChanges(base, {"aa": tuned["aa"]}, shapes)
    with pytest.raises(LangNeuronsError, match="needs parameters"):
        ParameterChanges(base, tuned)
    broken = {lang: dict(sd) for lang, sd in tuned.items()}
    broken["bb"]["layers.0.ffn.weight"] = torch.zeros(6, 5)
    with pytest.raises(LangNeuronsError, match="shape"):
        identify_parameters(base, broken, parameters=shapes)
    del broken["cc"]["layers.0.attn.weight"]
    with pytest.raises(LangNeuronsError, match="'cc' has no parameter"):
        ParameterChanges(base, broken, shapes)
    with pytest.raises(LangNeuronsError, match="top_rate"):
        ParameterVariation(top_rate=2)
    two = {lang: tuned[lang] for lang in ("aa", "bb")}
    with pytest.warns(UserWarning, match="2 languages"):
        identify_parameters(base, two, parameters=shapes)


# -- streamed selection == in-memory selection ------------------------------------------------------


def _random_values(seed: int, langs: int = 3, items: int = 900) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rates = torch.rand(langs, items, generator=generator)
    rates[:, :150] = 0.25  # equal change everywhere: all-zero values
    rates[1:, 150:250] = 0.75  # exact ties in entropy
    rates[0, 150:250] = 0.0
    return refined_values(rates)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streamed_percentiles_are_exact(seed):
    values = _random_values(seed)
    chunks = lambda: iter(values.split(250, dim=1))  # noqa: E731
    ranks = [1, 2, 450, 1500, 2565, 2700]
    expected = [float(values.flatten().kthvalue(k).values) for k in ranks]
    assert streamed_kth_values(chunks, ranks, collect_limit=0) == expected  # three histogram passes
    assert streamed_kth_values(chunks, ranks) == expected  # histogram, then collect the bucket
    assert streamed_kth_values(chunks, [2565])[0] == kth_percentile_value(values, 0.95)


@pytest.mark.parametrize("rates", [(0.01, 0.95, 0.95), (0.05, 0.9, 0.8), (0.2, 0.5, 0.95)])
def test_streamed_selection_equals_in_memory(rates):
    values = _random_values(7)
    memory = pooled_entropy_select(values, *rates)
    streamed = streamed_entropy_select(lambda: iter(values.split(61, dim=1)), *rates, collect_limit=0)
    assert torch.equal(memory.selected, streamed.selected)
    assert torch.equal(memory.membership, streamed.membership)
    assert torch.equal(memory.entropy, streamed.entropy)
    assert (memory.filter_value, memory.activation_bar, memory.passing) == (
        streamed.filter_value, streamed.activation_bar, streamed.passing)


def test_method_streams_when_over_the_memory_limit():
    base, tuned, shapes, _ = _fake_models()
    whole = identify_parameters(base, tuned, top_rate=0.2, parameters=shapes)
    streamed = identify_parameters(base, tuned, top_rate=0.2, parameters=shapes, max_values_in_memory=0)
    assert whole.sizes() == streamed.sizes() and sum(whole.sizes().values()) > 3
    for lang in whole.languages:
        assert torch.equal(whole.flat_indices(lang), streamed.flat_indices(lang))


# -- parameter sets ---------------------------------------------------------------------------------


def test_parameter_set_roundtrip_and_checks(tmp_path):
    shapes = {"a.weight": (3, 4), "b.weight": (2, 5)}
    pset = from_flat_indices({"en": torch.tensor([13, 0, 11]), "zh": torch.tensor([12, 21])}, shapes,
                             method="manual", source={"base": {"path": "x"}})
    assert {k: v.tolist() for k, v in pset.indices("en").items()} == {"a.weight": [0, 11], "b.weight": [1]}
    assert {k: v.tolist() for k, v in pset.indices("zh").items()} == {"b.weight": [0, 9]}
    assert pset.sizes() == {"en": 3, "zh": 2} and pset.total == 22
    assert pset.counts("zh") == {"a.weight": 0, "b.weight": 2}
    assert pset.mask("en", "a.weight").nonzero().tolist() == [[0, 0], [2, 3]]
    assert pset.flat_indices("en").tolist() == [0, 11, 13]
    pset.save(tmp_path / "set")
    again = load_parameters(tmp_path / "set")
    assert again.languages == pset.languages and again.shapes == pset.shapes and again.source == pset.source
    for lang in pset.languages:
        assert torch.equal(again.flat_indices(lang), pset.flat_indices(lang))
    meta = json.loads((tmp_path / "set" / "meta.json").read_text())
    assert meta["kind"] == "parameter_set" and meta["sizes"] == {"en": 3, "zh": 2}
    with pytest.raises(LangNeuronsError, match="out of range"):
        ParameterSet({"en": {"a.weight": torch.tensor([12])}}, shapes)
    with pytest.raises(LangNeuronsError, match="not among"):
        ParameterSet({"en": {"c.weight": torch.tensor([1])}}, shapes)
    with pytest.raises(LangNeuronsError, match="no language"):
        pset.indices("fr")
    (tmp_path / "set" / "tensors.safetensors").write_bytes(b"garbage")
    with pytest.raises(LangNeuronsError, match="corrupt"):
        load_parameters(tmp_path / "set")
    with pytest.raises(LangNeuronsError, match="neuron_set"):
        from langneurons.sets.neuronset import NeuronSet

        NeuronSet({"en": [torch.tensor([1])]}, 1, 4).save(tmp_path / "neurons")
        load_parameters(tmp_path / "neurons")


def test_random_parameters_like():
    shapes = {"a.weight": (30, 40), "b.weight": (20, 50)}
    pset = from_flat_indices({"en": torch.arange(0, 100), "zh": torch.arange(500, 530)}, shapes)
    first, second = random_parameters_like(pset, seed=3), random_parameters_like(pset, seed=3)
    assert first.sizes() == pset.sizes() and first.method == "random"
    assert torch.equal(first.flat_indices("en"), second.flat_indices("en"))
    assert not torch.equal(first.flat_indices("en"), random_parameters_like(pset, seed=4).flat_indices("en"))
    # the large-pool path (no full permutation): distinct, in range, roughly uniform
    draws = draw_without_replacement(50_000_000, 20_000, torch.Generator().manual_seed(0))
    assert draws.unique().numel() == 20_000 and int(draws.min()) >= 0 and int(draws.max()) < 50_000_000
    assert abs(float(draws.double().mean()) / 25_000_000 - 1) < 0.02
    with pytest.raises(LangNeuronsError, match="cannot draw"):
        draw_without_replacement(5, 6, torch.Generator())


# -- considered parameters ---------------------------------------------------------------------------


def test_considered_parameters_llama_and_every_family():
    names = list(considered_parameters(tiny_model("llama")))
    per_layer = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                 "mlp.up_proj", "mlp.down_proj"]
    assert names == [f"model.layers.{i}.{p}.weight" for i in range(2) for p in per_layer]
    for family in TINY_CONFIGS:
        model = tiny_model(family)
        shapes = considered_parameters(model)
        params = dict(model.named_parameters())
        for name, shape in shapes.items():
            assert params[name].shape == shape and len(shape) == 2
        layers = {name.split(".weight")[0].rsplit(".", 2)[0] for name in shapes}
        assert len(shapes) >= 4 * 2, (family, list(shapes))  # attention (>= 2) + FFN (2) per layer
        assert any("down" in n or "fc2" in n or "c_proj" in n or "4h_to_h" in n for n in shapes), family
        assert layers, family


# -- reversible zeroing ------------------------------------------------------------------------------


def _brute_force_zeroed(model, pset, lang):
    clone = copy.deepcopy(model)
    params = dict(clone.named_parameters())
    with torch.no_grad():
        for name, ids in pset.indices(lang).items():
            params[name].view(-1)[ids] = 0
    return clone


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_zero_parameters_is_exact_and_reversible(family):
    model = tiny_model(family, vocab_size=300)
    shapes = considered_parameters(model)
    generator = torch.Generator().manual_seed(1)
    total = sum(math.prod(s) for s in shapes.values())
    pset = from_flat_indices({"xx": torch.randperm(total, generator=generator)[:400]}, shapes)
    ids = torch.randint(3, 300, (2, 12), generator=generator)
    params_before = {name: (p, p.detach().clone()) for name, p in model.named_parameters()}
    with torch.no_grad():
        normal = model(ids).logits
        expected = _brute_force_zeroed(model, pset, "xx")(ids).logits
    name = next(iter(pset.indices("xx")))
    module = model.get_submodule(name.rsplit(".", 1)[0])
    seen = []
    probe = module.register_forward_hook(lambda mod, args, out: seen.append(mod.weight.detach().clone()))
    with torch.no_grad(), zero_parameters(model, pset, "xx"):
        zeroed = model(ids).logits
        assert module.weight is params_before[name][0]  # outside a forward, the original Parameter
    probe.remove()
    assert torch.equal(zeroed, expected) and not torch.equal(zeroed, normal)
    flat = seen[0].flatten()
    assert (flat[pset.indices("xx")[name]] == 0).all()
    assert int((flat != 0).sum()) == flat.numel() - pset.indices("xx")[name].numel()
    with torch.no_grad():
        after = model(ids).logits
    assert torch.equal(after, normal)  # bit-identical
    for name, (param, value) in params_before.items():
        assert dict(model.named_parameters())[name] is param and torch.equal(param, value)


def test_zero_parameters_in_generation_and_for_several_languages():
    model = tiny_model("llama", vocab_size=300)
    shapes = considered_parameters(model)
    pset = from_flat_indices({"xx": torch.arange(0, 18000, 5), "yy": torch.arange(2, 18000, 5)}, shapes)
    both = ParameterSet({"xy": {n: torch.cat([pset.indices("xx").get(n, torch.zeros(0, dtype=torch.long)),
                                             pset.indices("yy").get(n, torch.zeros(0, dtype=torch.long))])
                                for n in shapes}}, shapes)
    prompt = torch.randint(3, 300, (2, 6), generator=torch.Generator().manual_seed(2))
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        normal = model.generate(prompt, **kwargs)
        expected = _brute_force_zeroed(model, both, "xy").generate(prompt, **kwargs)
        with zero_parameters(model, pset, ["xx", "yy"]):
            zeroed = model.generate(prompt, **kwargs)
        assert torch.equal(zeroed, expected) and not torch.equal(zeroed, normal)
        assert torch.equal(model.generate(prompt, **kwargs), normal)


def test_zero_parameters_restores_after_an_exception_and_checks_the_model():
    model = tiny_model("llama", vocab_size=300)
    shapes = considered_parameters(model)
    pset = from_flat_indices({"xx": torch.arange(0, 4000, 7)}, shapes)
    ids = torch.randint(3, 300, (1, 8))
    with torch.no_grad():
        normal = model(ids).logits
    name = next(iter(pset.indices("xx")))
    module = model.get_submodule(name.rsplit(".", 1)[0])
    original = module.weight

    def fail(mod, args):
        assert mod.weight is not original and not torch.equal(mod.weight, original)  # the zeroed copy is in place
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), torch.no_grad(), zero_parameters(model, pset, "xx"):
        handle = module.register_forward_pre_hook(fail)  # runs after the swap, inside the module's call
        try:
            model(ids)
        finally:
            handle.remove()
            assert module.weight is original
    with torch.no_grad():
        assert torch.equal(model(ids).logits, normal)
    wrong = ParameterSet({"xx": {}}, {"model.layers.0.mlp.up_proj.weight": (3, 3)})
    with pytest.raises(LangNeuronsError, match="shape"), zero_parameters(model, wrong, "xx"):
        pass
    with pytest.raises(LangNeuronsError, match="no language"), zero_parameters(model, pset, "yy"):
        pass


# -- tiny end-to-end on a Llama ---------------------------------------------------------------------


def test_two_perturbed_copies_of_a_tiny_llama():
    """The brief's case: copy A moved entries S_A, copy B moved S_B, nothing else changed.

    PV finds exactly S_A and S_B; an entry A's tuning moved but B's did not has the low change in B,
    so it is B's (the paper's "low rate of change in one language but a high rate in others").
    """
    base = tiny_model("llama", vocab_size=300)
    shapes = considered_parameters(base)
    names = list(shapes)
    planted = {"aa": [(names[0], 5), (names[6], 17)], "bb": [(names[3], 2), (names[9], 40), (names[13], 0)]}
    copies = {}
    for lang, entries in planted.items():
        copies[lang] = copy.deepcopy(base)
        params = dict(copies[lang].named_parameters())
        with torch.no_grad():
            for name, index in entries:
                params[name].view(-1)[index] += 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = identify_parameters(base, copies, top_rate=0.01)
    assert result.parameters["selected_before_assignment"] == 5
    got = {lang: {(n, int(i)) for n, ids in result.indices(lang).items() for i in ids} for lang in result.languages}
    assert got == {"aa": set(planted["bb"]), "bb": set(planted["aa"])}


def _planted_copies(base, shapes, langs, per_language, seed=0):
    """Fine-tuned stand-ins: every entry moves in every copy, by 1-2%, 3-4% or 5-6% (which language moves it
    least / most is random per entry; the bands are disjoint so no two languages tie in float32); each
    language's planted entries do not move in its own copy and double in the others."""
    generator = torch.Generator().manual_seed(seed)
    total = sum(math.prod(s) for s in shapes.values())
    chosen = torch.randperm(total, generator=generator)[: per_language * len(langs)].view(len(langs), -1)
    planted = {lang: chosen[k].sort().values for k, lang in enumerate(langs)}
    base_params = dict(base.named_parameters())
    copies = {lang: copy.deepcopy(base) for lang in langs}
    start = 0
    for name, shape in shapes.items():
        numel = math.prod(shape)
        band = torch.rand(len(langs), *shape, generator=generator).argsort(0).argsort(0)  # a permutation per entry
        factors = 1 + 0.01 * (2 * band + 1 + torch.rand(len(langs), *shape, generator=generator))
        original = base_params[name].detach().view(-1)
        for k, lang in enumerate(langs):
            weight = dict(copies[lang].named_parameters())[name]
            with torch.no_grad():
                weight.mul_(factors[k])
                for owner in langs:
                    local = planted[owner] - start
                    local = local[(local >= 0) & (local < numel)]
                    weight.view(-1)[local] = original[local] * (1.0 if owner == lang else 2.0)
        start += numel
    return copies, planted


def test_three_languages_end_to_end_cli_and_perplexity(tmp_path, llama_dir, valid_dir):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(llama_dir)).eval()
    shapes = considered_parameters(base)
    total = sum(math.prod(s) for s in shapes.values())
    langs = ["aa", "bb", "cc"]
    budget = round(total * 0.01)
    copies, planted = _planted_copies(base, shapes, langs, per_language=budget // 3)
    budget_rate = (budget // 3 * 3) / total
    args = ["pv", "identify", "--base", str(llama_dir), "--out", str(tmp_path / "pv"), "--top-rate", str(budget_rate)]
    for lang, model in copies.items():
        model.save_pretrained(str(tmp_path / f"ft-{lang}"))
        args += ["--finetuned", f"{lang}={tmp_path / f'ft-{lang}'}"]
    assert main(args) == 0
    result = load_parameters(tmp_path / "pv")
    for lang in langs:
        assert torch.equal(result.flat_indices(lang), planted[lang]), lang
    assert result.source["base"]["path"] == str(llama_dir)
    assert set(result.source["finetuned"]) == set(langs)
    # the same from Python, reading the models in memory, and streamed
    in_memory = identify_parameters(base, copies, top_rate=budget_rate, max_values_in_memory=0)
    assert all(torch.equal(in_memory.flat_indices(k), planted[k]) for k in langs)

    assert main(["pv", "perplexity", "--model", str(llama_dir), "--corpus", str(valid_dir), "--parameters",
                 str(tmp_path / "pv"), "--out", str(tmp_path / "ppl"), "--seq-len", "32", "--max-tokens", "64",
                 "--no-progress"]) == 0
    matrix = load_perplexity(tmp_path / "ppl")
    assert matrix.conditions == ["normal", "random", "aa", "bb", "cc"] and matrix.languages == langs
    assert (tmp_path / "ppl" / "perplexity_change.png").is_file()
    # brute force: one cell recomputed on a copy with bb's entries zeroed in place
    from transformers import AutoTokenizer

    from langneurons.data.corpus import load_corpus

    tokenizer = AutoTokenizer.from_pretrained(str(llama_dir))
    packed = load_corpus(valid_dir, tokenizer, 32, max_tokens=64)
    total_nll, count = corpus_nll(_brute_force_zeroed(base, result, "bb"), packed.windows["cc"])
    assert matrix.nll[3, 2].item() == pytest.approx(total_nll / count, rel=1e-6)
    normal_nll, _ = corpus_nll(base, packed.windows["cc"])
    assert matrix.nll[0, 2].item() == pytest.approx(normal_nll / count, rel=1e-6)
    direct = parameter_perplexity_matrix(base, packed, result, tokenizer=tokenizer, include_random=False,
                                         zero_languages=["bb"], progress=False)
    assert direct.conditions == ["normal", "bb"]
    assert torch.allclose(direct.nll, matrix.nll[[0, 3]], rtol=1e-6)


def test_cli_errors_write_nothing(tmp_path, llama_dir, capsys):
    out = tmp_path / "out"
    cases = [
        ["--finetuned", "aa", "--finetuned", f"bb={llama_dir}"],
        ["--finetuned", f"aa={llama_dir}"],
        ["--finetuned", f"aa={llama_dir}", "--finetuned", f"aa={llama_dir}"],
        ["--finetuned", f"aa={llama_dir}", "--finetuned", f"bb={tmp_path / 'missing'}"],
    ]
    for extra in cases:
        assert main(["pv", "identify", "--base", str(llama_dir), "--out", str(out), *extra]) == 2, extra
        assert not out.exists()
        err = capsys.readouterr().err.strip()
        assert err.startswith("langneurons pv: error:") and "\n" not in err, err
    assert main(["pv", "perplexity", "--model", str(llama_dir), "--corpus", str(tmp_path), "--parameters",
                 str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


# -- with real fine-tuning: langneurons toy train --init-from ---------------------------------------

WORDS = {
    "en": "the lord said unto his people and they went into the city of god with joy".split(),
    "fr": "le seigneur dit à son peuple et ils allèrent dans la ville de dieu avec joie".split(),
    "es": "el señor dijo a su pueblo y ellos fueron a la ciudad de dios con alegría".split(),
}
TINY = ["--hidden", "32", "--layers", "2", "--heads", "2", "--intermediate", "64", "--vocab-size", "320"]
RUN = ["--seq-len", "32", "--batch-size", "8", "--holdout", "20", "--eval-tokens", "256", "--no-progress"]


def test_toy_train_init_from_pipeline(tmp_path):
    rng = random.Random(0)
    corpora = {}
    for lang, words in WORDS.items():
        lines = [" ".join(words[s : s + rng.randint(4, 8)]) for s in (rng.randrange(len(words) - 6) for _ in range(100))]
        corpora[lang] = lines
        (tmp_path / "all").mkdir(exist_ok=True)
        (tmp_path / "all" / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp_path / lang).mkdir()
        (tmp_path / lang / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    base = tmp_path / "base"
    assert main(["toy", "train", "--corpus", str(tmp_path / "all"), "--out", str(base), "--steps", "20", "--lr", "3e-3",
                 *TINY, *RUN]) == 0
    args = ["pv", "identify", "--base", str(base), "--out", str(tmp_path / "pv")]
    for lang in WORDS:
        ft = tmp_path / f"ft-{lang}"
        assert main(["toy", "train", "--corpus", str(tmp_path / lang), "--out", str(ft), "--steps", "8",
                     "--init-from", str(base), "--lr", "1e-3", *RUN]) == 0
        args += ["--finetuned", f"{lang}={ft}"]
    assert main(args) == 0
    result = load_parameters(tmp_path / "pv")
    total = result.total
    assert result.parameters["selected_before_assignment"] == round(total * 0.01)
    assert all(size > 0 for size in result.sizes().values()), result.sizes()
    recorded = result.source["finetuned"]["fr"]["toy_train_args"]
    assert recorded["init_from"] == str(base) and recorded["architecture_from"] == str(base)
    base_args = json.loads((base / "toy_train_args.json").read_text())
    assert [recorded[k] for k in ("arch", "hidden", "layers", "heads", "intermediate")] == \
        [base_args[k] for k in ("arch", "hidden", "layers", "heads", "intermediate")]
    assert main(["toy", "train", "--corpus", str(tmp_path / "fr"), "--out", str(tmp_path / "long"), "--steps", "1",
                 "--init-from", str(base), *RUN, "--seq-len", "100000"]) == 2
    assert not (tmp_path / "long").exists()


def test_identify_method_pv_dispatches(tmp_path):
    """`langneurons identify --method pv` needs --base and --finetuned, and refuses --stats."""
    from langneurons.cli.main import main

    assert main(["identify", "--method", "pv", "--out", str(tmp_path / "x")]) == 2
    assert main(["identify", "--method", "lape", "--base", "m", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
