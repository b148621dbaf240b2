"""General interventions: every kind at exactly its positions, per-row sets and values, several sites,
bit-identical exit, and generate with the KV cache against brute-force decoding."""

from __future__ import annotations

from contextlib import ExitStack, contextmanager

import pytest
import torch

import langneurons as ln
from langneurons.data.batching import forward_kwargs, pad_rows
from langneurons.errors import LangNeuronsError
from langneurons.interventions.neurons import plan_edits, plan_ops
from langneurons.interventions.ops import KINDS
from langneurons.model.sites import locate_site, site_hooks
from langneurons.sets.neuronset import NeuronSet
from langneurons.testbed.tiny import tiny_model

ATTENTION_SITES = ["attn.q", "attn.k", "attn.v", "attn.o_in"]


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", vocab_size=300)


def rows_of(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 300, (n,), generator=generator).tolist() for n in lengths]


def grids(model, sites):
    located = {site: locate_site(model, site) for site in sites}
    return {site: (m.num_layers, m.width) for site, m in located.items()}


def random_set(model, labels, sites, seed=0, p=0.25):
    generator = torch.Generator().manual_seed(seed)
    masks = {label: {site: torch.rand(grid, generator=generator) < p for site, grid in grids(model, sites).items()}
             for label in labels}
    return NeuronSet.from_masks(masks)


@contextmanager
def capture(model, sites):
    """Observe each site (the tensor as it is when this hook runs): ``seen[site][layer]``.

    Sites are located before any hook is attached (locating runs a one-row validation forward)."""
    seen = {site: {} for site in sites}
    located = {site: locate_site(model, site) for site in sites}
    with ExitStack() as stack:
        for site in sites:
            stack.enter_context(site_hooks(located[site],
                                           lambda layer, t, site=site: seen[site].__setitem__(layer, t.detach().clone())))
        yield seen


@contextmanager
def capture_after(model, sites, edits):
    """Enter ``edits``, then observe each site after them."""
    located = {site: locate_site(model, site) for site in sites}
    seen = {site: {} for site in sites}
    with ln.intervene(model, edits, site_map=located), ExitStack() as stack:
        for site in sites:
            stack.enter_context(site_hooks(located[site],
                                           lambda layer, t, site=site: seen[site].__setitem__(layer, t.detach().clone())))
        yield seen


def hand_value(kind, x, v):
    """The kind's equation on one float32 element (``x`` and ``v`` 0-dim tensors)."""
    return {"zero": lambda: torch.zeros_like(x), "set": lambda: v, "raise": lambda: torch.maximum(x, v),
            "scale": lambda: x * v, "add": lambda: x + v}[kind]()


def last_real(mask_row):
    return max(t for t in range(len(mask_row)) if mask_row[t])


def expected_site(kind, positions, before, mask, ids_of_row, value_of):
    """``before[B, T, W]`` edited by hand: loops over rows, positions and each row's chosen neurons."""
    expected = before.clone()
    for b in range(before.shape[0]):
        for t in range(before.shape[1]):
            chosen = {"all": True, "prompt": True, "generated": False,
                      "last": t == last_real(mask[b].tolist())}[positions]
            if not chosen:
                continue
            for j in ids_of_row(b):
                v = torch.zeros((), dtype=before.dtype) if kind == "zero" else value_of(b, j)
                expected[b, t, j] = hand_value(kind, before[b, t, j], v)
    return expected


def run_and_check(model, edit, sites, rows, side, kind, positions, ids_of, value_of):
    input_ids, mask = pad_rows(rows, pad_id=0, side=side)
    with torch.no_grad(), capture(model, sites) as before:
        with capture_after(model, sites, [edit]) as after:
            model(input_ids=input_ids, **forward_kwargs(model, mask))
    changed = 0
    for site in sites:
        for layer in before[site]:
            expected = expected_site(kind, positions, before[site][layer], mask,
                                     lambda b: ids_of(b, site, layer), lambda b, j: value_of(b, site, layer, j))
            assert torch.equal(after[site][layer], expected), (site, layer)
            changed += int(not torch.equal(after[site][layer], before[site][layer]))
    return changed


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("positions", ["all", "last", "prompt", "generated"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_sets_exactly_what_it_says_at_exactly_its_positions(llama, kind, positions, side):
    sites = ["ffn.act", "attn.q"]
    neurons = random_set(llama, ["xx"], sites, seed=1, p=0.1)
    value = {site: torch.randn(grid, generator=torch.Generator().manual_seed(2)) + 0.5
             for site, grid in grids(llama, sites).items()}
    edit = ln.NeuronEdit(neurons, "xx", None if kind == "zero" else value, kind=kind, positions=positions)
    changed = run_and_check(
        llama, edit, sites, rows_of([5, 8, 3]), side, kind, positions,
        ids_of=lambda b, site, layer: neurons.layers("xx", site)[layer].tolist(),
        value_of=lambda b, site, layer, j: value[site][layer, j].double().float())
    assert changed == (0 if positions == "generated" else 4)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("form", ["per-row sets", "shared set, per-row values", "list of sets"])
@pytest.mark.parametrize("kind", ["set", "raise", "scale", "add", "zero"])
def test_per_row_sets_and_values_at_the_last_token(llama, kind, form, side):
    sites = ["ffn.down_in", "attn.v"]
    labels = ["a", "b", "c"]
    neurons = random_set(llama, labels, sites, seed=3, p=0.2)
    value = {site: torch.randn(3, *grid, generator=torch.Generator().manual_seed(4)) for site, grid in
             grids(llama, sites).items()}  # float[B, layers, width]
    value = None if kind == "zero" else value
    if form == "per-row sets":
        edit = ln.NeuronEdit(neurons, value=value, kind=kind, rows=["b", "a", "c"], positions="last")
        label_of = ["b", "a", "c"]
    elif form == "list of sets":
        per_row = [neurons.select(label) for label in ("c", "c", "a")]
        edit = ln.NeuronEdit(per_row, value=value, kind=kind, positions="last")
        label_of = ["c", "c", "a"]
    else:
        edit = ln.NeuronEdit(neurons, "a", value, kind=kind, positions="last")
        if kind == "zero":
            pytest.skip("a shared set without per-row values is covered above")
        label_of = ["a", "a", "a"]
    run_and_check(
        llama, edit, sites, rows_of([4, 7, 6], seed=5), side, kind, "last",
        ids_of=lambda b, site, layer: neurons.layers(label_of[b], site)[layer].tolist(),
        value_of=lambda b, site, layer, j: value[site][b, layer, j].double().float())


def test_raise_and_set_to_the_mean_of_recorded_statistics(llama):
    site_map = locate_site(llama, "ffn.act")
    stats = ln.ActivationStats.empty(["xx", "yy"], site_map.num_layers, site_map.width, meta={"site": "ffn.act"})
    for k, lang in enumerate(["xx", "yy"]):
        for layer in range(site_map.num_layers):
            stats.add(lang, layer, torch.randn(9, site_map.width, generator=torch.Generator().manual_seed(10 + k)),
                      count_tokens=layer == 0)
    means = stats.mean_activation()
    neurons = random_set(llama, ["xx", "yy"], ["ffn.act"], seed=6, p=0.2)
    for kind in ("raise", "set"):
        edit = ln.NeuronEdit(neurons, value_language="yy", stats=stats, strength=0.5, kind=kind, rows=["xx", "yy"])
        run_and_check(llama, edit, ["ffn.act"], rows_of([6, 6], seed=7), "right", kind, "all",
                      ids_of=lambda b, site, layer: neurons.layers(["xx", "yy"][b], site)[layer].tolist(),
                      value_of=lambda b, site, layer, j: (means[1, layer, j] * 0.5).float())


def logits_of(model, rows, side, edits=()):
    input_ids, mask = pad_rows(rows, pad_id=0, side=side)
    with torch.no_grad(), ln.intervene(model, list(edits)):
        return model(input_ids=input_ids, **forward_kwargs(model, mask)).logits, mask


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_per_row_deactivation_equals_each_row_alone_with_its_own_set(family, side):
    model = tiny_model(family, vocab_size=300)
    sites = ["ffn.act", "attn.v", "attn.o_in"] if family == "llama" else ["ffn.act", "ffn.down_in"]
    neurons = random_set(model, ["r0", "r1", "r2"], sites, seed=8, p=0.3)
    rows = rows_of([6, 9, 4], seed=9)
    batched, mask = logits_of(model, rows, side, [ln.Zero(neurons, rows=["r0", "r1", "r2"])])
    normal, _ = logits_of(model, rows, side)
    for i, row in enumerate(rows):
        real = mask[i].bool()
        with torch.no_grad():
            with ln.deactivate(model, neurons, f"r{i}"):
                alone = model(input_ids=torch.tensor([row])).logits[0]
            with ln.deactivate(model, neurons, f"r{(i + 1) % 3}"):
                other = model(input_ids=torch.tensor([row])).logits[0]
        torch.testing.assert_close(batched[i][real], alone, atol=1e-5, rtol=1e-4)
        assert (batched[i][real] - other).abs().max() > 1e-3  # another row's set gives another answer
        assert (batched[i][real] - normal[i][real]).abs().max() > 1e-3


def test_several_sites_in_one_context_equal_hand_written_hooks(llama):
    sites = ["ffn.act", "ffn.down_in", *ATTENTION_SITES]
    neurons = random_set(llama, ["xx"], sites, seed=11, p=0.15)
    factor = 3.0
    rows = rows_of([7, 7], seed=12)
    edits = [ln.Zero(neurons, "xx", sites=["ffn.act", "attn.q", "attn.o_in"]),
             ln.Scale(neurons, "xx", factor, sites=["ffn.down_in", "attn.k", "attn.v"])]
    edited, _ = logits_of(llama, rows, "right", edits)

    def hand(site):
        ids = neurons.layers("xx", site)

        def fn(layer, x):
            x = x.clone()
            x[..., ids[layer]] = 0 if site in ("ffn.act", "attn.q", "attn.o_in") else x[..., ids[layer]] * factor
            return x
        return fn

    with ExitStack() as stack:
        for site in sites:
            stack.enter_context(site_hooks(locate_site(llama, site), hand(site)))
        brute, _ = logits_of(llama, rows, "right")
    normal, _ = logits_of(llama, rows, "right")
    assert torch.equal(edited, brute)
    assert (edited - normal).abs().max() > 1e-3


def test_leaving_restores_bit_identical_logits_even_after_an_error(llama):
    rows = rows_of([5, 8], seed=13)
    before, _ = logits_of(llama, rows, "left")
    neurons = random_set(llama, ["a", "b"], ["ffn.act", "attn.k"], seed=14, p=0.3)
    edits = [ln.Zero(neurons, rows=["a", "b"], positions="last"), ln.Add(neurons, "b", 1.5, positions="prompt"),
             ln.Raise(neurons, "a", 0.2)]
    during, _ = logits_of(llama, rows, "left", edits)
    assert (during - before).abs().max() > 1e-3
    after, _ = logits_of(llama, rows, "left")
    assert torch.equal(after, before)
    with pytest.raises(RuntimeError, match="boom"):
        with ln.intervene(llama, edits):
            raise RuntimeError("boom")
    again, _ = logits_of(llama, rows, "left")
    assert torch.equal(again, before)
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in llama.modules())


def brute_force_greedy(model, prompt, steps, site_edits, positions):
    """No cache: every step reruns the whole sequence; hand hooks add ``v`` at the chosen positions."""
    start = prompt.shape[1]

    def hook(site, ids, v):
        def fn(layer, x):
            x = x.clone()
            chosen = {"all": range(x.shape[1]), "prompt": range(min(start, x.shape[1])),
                      "generated": range(start, x.shape[1])}[positions]
            for t in chosen:
                x[:, t, ids[layer]] = x[:, t, ids[layer]] + v[layer, ids[layer]]
            return x
        return fn

    sequence, scores = prompt, []
    with ExitStack() as stack, torch.no_grad():
        for site, (ids, v) in site_edits.items():
            stack.enter_context(site_hooks(locate_site(model, site), hook(site, ids, v)))
        for _ in range(steps):
            logits = model(input_ids=sequence, use_cache=False).logits[:, -1]
            scores.append(logits)
            sequence = torch.cat([sequence, logits.argmax(-1, keepdim=True)], dim=1)
    return sequence, scores


@pytest.mark.parametrize("positions", ["prompt", "generated", "all"])
def test_greedy_generate_with_kv_cache_equals_brute_force_decoding(llama, positions, monkeypatch):
    sites = ["ffn.act", "attn.k"]
    neurons = random_set(llama, ["xx"], sites, seed=15, p=0.3)
    value = {site: torch.randn(grid, generator=torch.Generator().manual_seed(16)) * 2
             for site, grid in grids(llama, sites).items()}
    prompt = torch.randint(3, 300, (2, 5), generator=torch.Generator().manual_seed(17))
    monkeypatch.setattr(llama.generation_config, "eos_token_id", None)  # 6 new tokens, as the brute force decodes
    settings = dict(max_new_tokens=6, do_sample=False, output_logits=True, return_dict_in_generate=True,
                    pad_token_id=0, attention_mask=torch.ones_like(prompt))
    with torch.no_grad():
        normal = llama.generate(prompt, **settings)
        with ln.intervene(llama, [ln.Add(neurons, "xx", value, positions=positions)]):
            out = llama.generate(prompt, **settings)
    v32 = {site: value[site].double().float() for site in sites}
    sequence, scores = brute_force_greedy(llama, prompt, 6, {s: (neurons.layers("xx", s), v32[s]) for s in sites},
                                          positions)
    assert torch.equal(out.sequences, sequence)
    assert len(out.logits) == len(scores) == 6
    for cached, brute in zip(out.logits, scores):
        torch.testing.assert_close(cached, brute, atol=1e-4, rtol=1e-4)
    first_changed = (out.logits[0] - normal.logits[0]).abs().max() > 1e-3
    assert first_changed == (positions != "generated")  # generated tokens only: the prompt's forward is untouched
    assert (out.logits[-1] - normal.logits[-1]).abs().max() > 1e-3


def test_per_row_sets_follow_their_rows_through_beam_search(llama):
    neurons = random_set(llama, ["r0", "r1"], ["ffn.act", "attn.v"], seed=18, p=0.3)
    prompt = torch.randint(3, 300, (2, 4), generator=torch.Generator().manual_seed(19))
    settings = dict(max_new_tokens=5, do_sample=False, num_beams=2, pad_token_id=0)
    with torch.no_grad():
        with ln.intervene(llama, [ln.Zero(neurons, rows=["r0", "r1"])]):
            batched = llama.generate(prompt, attention_mask=torch.ones_like(prompt), **settings)
        for i in range(2):
            with ln.deactivate(llama, neurons, f"r{i}"):
                alone = llama.generate(prompt[i:i + 1], attention_mask=torch.ones_like(prompt[i:i + 1]), **settings)
            assert torch.equal(batched[i], alone[0])


def test_legacy_edits_stay_one_index_copy_per_layer(llama):
    site_map = locate_site(llama, "ffn.act")
    stats = ln.ActivationStats.empty(["es", "zh"], site_map.num_layers, site_map.width, meta={"site": "ffn.act"})
    stats.add("zh", 0, torch.randn(4, site_map.width, generator=torch.Generator().manual_seed(20)))
    stats.add("es", 1, torch.randn(4, site_map.width, generator=torch.Generator().manual_seed(21)))
    neurons = random_set(llama, ["es", "zh"], ["ffn.act"], seed=22, p=0.3)
    edits = [ln.Deactivate(neurons, "es"), ln.Activate(neurons, ["zh", "es"], stats, 2.0)]
    plan = plan_ops([e.to_edit() for e in edits], {"ffn.act": site_map})
    legacy = plan_edits(edits, site_map.num_layers)
    assert set(plan["ffn.act"]) == set(legacy)
    for layer, (ids, values) in legacy.items():
        (op,) = plan["ffn.act"][layer]
        assert op.kind == "set" and torch.equal(op.ids, ids) and torch.equal(op.master_values(), values)


def test_bad_edits_fail_with_one_line_errors(llama):
    neurons = random_set(llama, ["a", "b"], ["ffn.act", "attn.q"], seed=23)
    ids = torch.randint(3, 300, (3, 5))
    with pytest.raises(LangNeuronsError, match="for 2 rows met a batch of 3"):
        with ln.intervene(llama, [ln.Zero(neurons, rows=["a", "b"])]):
            llama(input_ids=ids)
    with pytest.raises(LangNeuronsError, match="give value=\\{site: tensor\\}"):
        with ln.intervene(llama, [ln.Add(neurons, "a", torch.zeros(2, 64))]):
            pass
    with pytest.raises(LangNeuronsError, match="must be a number, float\\[2, 64\\]"):
        with ln.intervene(llama, [ln.Add(neurons, "a", {"ffn.act": torch.zeros(64), "attn.q": 1.0})]):
            pass
    with pytest.raises(LangNeuronsError, match="unknown positions"):
        ln.Zero(neurons, "a", positions="first")
    with pytest.raises(LangNeuronsError, match="unknown edit kind"):
        ln.NeuronEdit(neurons, "a", 1.0, kind="multiply")
    with pytest.raises(LangNeuronsError, match="takes no value"):
        ln.Zero(neurons, "a", value=1.0)
    with pytest.raises(LangNeuronsError, match="exactly one of"):
        ln.Scale(neurons, "a")
    with pytest.raises(LangNeuronsError, match="no language 'c'"):
        with ln.intervene(llama, [ln.Zero(neurons, rows=["a", "c"])]):
            pass
    with pytest.raises(LangNeuronsError, match="disagree on the number of rows"):
        ln.Scale(neurons, value={"ffn.act": torch.ones(3, 2, 64), "attn.q": 1.0}, rows=["a", "b"])


@pytest.mark.parametrize("family", ["opt", "gpt2"])
def test_per_row_last_token_edits_on_flattened_and_absolute_position_families(family):
    """OPT's FFN flattens its site tensor to [B * T, W]; per-row, last-token edits must still hit each row's own
    last real token under left padding, as running each row alone does."""
    import langneurons as ln
    from langneurons.data.batching import forward_kwargs, pad_rows
    from langneurons.model.sites import locate_site
    from langneurons.testbed.tiny import tiny_model

    model = tiny_model(family)
    width = locate_site(model, "ffn.act").width
    sets = ln.NeuronSet({"a": [torch.tensor([1, 2]), torch.tensor([3])],
                         "b": [torch.tensor([4]), torch.tensor([5, 6])]}, 2, width)
    rows = [[5, 6, 7, 8, 9], [10, 11, 12]]
    ids, mask = pad_rows(rows, 0, side="left")
    with torch.no_grad():
        with ln.intervene(model, [ln.NeuronEdit(sets, kind="zero", rows=["a", "b"], positions="last")]):
            batched = model(input_ids=ids, **forward_kwargs(model, mask)).logits[:, -1]
        for row, (tokens, lang) in enumerate(zip(rows, "ab")):
            with ln.intervene(model, [ln.NeuronEdit(sets, lang, kind="zero", positions="last")]):
                alone = model(input_ids=torch.tensor([tokens])).logits[0, -1]
            plain = model(input_ids=torch.tensor([tokens])).logits[0, -1]
            assert torch.allclose(batched[row], alone, atol=1e-5)
            assert not torch.allclose(plain, alone, atol=1e-4)  # the edit did something
