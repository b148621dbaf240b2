"""One pass, several sites and statistics; per-row (mixed-language) batches; last token and positions under left
and right padding, against each text run alone, unpadded."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

import langneurons as ln
from langneurons.errors import LangNeuronsWarning
from langneurons.data.parallel import ParallelCorpus, parallel_batches, tokenize_parallel
from langneurons.model.sites import locate_site, site_hooks
from langneurons.recording.accumulator import StatsAccumulator
from langneurons.recording.pooled import record_pooled
from langneurons.recording.recorder import Batch, run_batches
from langneurons.stats.base import BatchInfo
from langneurons.testbed.tiny import tiny_model

LINES = {"aa": ["abc def ghij", "hi", "a b c d e f g h", "jj j", "bad cab"],
         "bb": ["абв", "жзик где абв", "а б", "ик ик ик ик", "е"]}
SITES = ("ffn.act", "ffn.down_in", "attn.q", "attn.k", "attn.o_in", "layer.out")


def alone(model, site: str, ids: list[int]) -> dict[int, torch.Tensor]:
    """``{layer: [seq, width]}`` at ``site`` for one unpadded sequence."""
    site_map = locate_site(model, site)
    seen = {}
    with torch.no_grad(), site_hooks(site_map, lambda layer, t: seen.__setitem__(layer, t[0].clone())):
        model(input_ids=torch.tensor([ids]), use_cache=False)
    return seen


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("site", ["ffn.act", "layer.out"])
def test_last_token_and_mean_under_padding_equal_unpadded_runs(family, side, site, tokenizer):
    model = tiny_model(family, vocab_size=300)
    corpus = ParallelCorpus(LINES)
    results = {mode: record_pooled(model, corpus, site=site, mode=mode, batch_size=4, tokenizer=tokenizer,
                                   padding_side=side, progress=False) for mode in ("last", "mean")}
    for lang, lines in LINES.items():
        for item, line in enumerate(lines):
            acts = alone(model, site, tokenizer(line, add_special_tokens=False)["input_ids"])
            for layer, values in acts.items():
                torch.testing.assert_close(results["last"].language(lang)[item, layer], values[-1],
                                           rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(results["mean"].language(lang)[item, layer], values.mean(0),
                                           rtol=1e-4, atol=1e-5)
    assert results["last"].meta["parameters"]["padding_side"] == side


def test_gpt2_left_padding_needs_position_ids(tokenizer, monkeypatch):
    """Without the position ids the recorder passes, GPT-2's absolute positions shift under left padding."""
    import langneurons.recording.recorder as recorder

    model = tiny_model("gpt2", vocab_size=300)
    corpus = ParallelCorpus(LINES)
    monkeypatch.setattr(recorder, "forward_kwargs", lambda body, mask: {"attention_mask": mask})
    shifted = record_pooled(model, corpus, site="layer.out", mode="last", batch_size=4, tokenizer=tokenizer,
                            padding_side="left", progress=False)
    ids = tokenizer(LINES["aa"][1], add_special_tokens=False)["input_ids"]  # the shortest row of its batch
    expected = alone(model, "layer.out", ids)[1][-1]
    assert not torch.allclose(shifted.language("aa")[1, 1], expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("side", ["left", "right"])
def test_bos_is_run_but_not_pooled(tokenizer, side):
    model = tiny_model("llama", vocab_size=300)
    pooled = record_pooled(model, ParallelCorpus(LINES), mode="mean", add_bos=True, batch_size=3, tokenizer=tokenizer,
                           padding_side=side, progress=False)
    for lang, lines in LINES.items():
        for item, line in enumerate(lines):
            ids = [tokenizer.bos_token_id] + tokenizer(line, add_special_tokens=False)["input_ids"]
            for layer, values in alone(model, "ffn.act", ids).items():
                torch.testing.assert_close(pooled.language(lang)[item, layer], values[1:].mean(0),
                                           rtol=1e-4, atol=1e-5)


def test_long_inputs_keep_their_end_for_the_last_token(tokenizer):
    model = tiny_model("gpt2", vocab_size=300)
    with pytest.warns(LangNeuronsWarning, match="cut from the start"):
        pooled = record_pooled(model, ParallelCorpus(LINES), site="layer.out", mode="last", max_length=3,
                               batch_size=4, tokenizer=tokenizer, padding_side="left", progress=False)
    cut = 0
    for lang, lines in LINES.items():
        for item, line in enumerate(lines):
            ids = tokenizer(line, add_special_tokens=False)["input_ids"]
            cut += len(ids) > 3
            expected = alone(model, "layer.out", ids[-3:])
            torch.testing.assert_close(pooled.language(lang)[item, 1], expected[1][-1], rtol=1e-4, atol=1e-5)
    assert pooled.meta["inputs"]["cut"] == cut > 0


def test_several_sites_in_one_pass_equal_separate_passes(corpus_dir, tokenizer):
    model = tiny_model("llama", vocab_size=300)
    kwargs = dict(tokenizer=tokenizer, seq_len=16, max_tokens=32, batch_size=2, progress=False)
    together = ln.record(model, corpus_dir, sites=list(SITES), **kwargs)
    assert list(together) == list(SITES)
    for site in SITES:
        alone_stats = ln.record(model, corpus_dir, site=site, **kwargs)
        for name in ("positive_count", "activation_sum", "activation_sq_sum", "token_count"):
            assert torch.equal(getattr(together[site], name), getattr(alone_stats, name)), (site, name)
        assert together[site].meta["site"] == site and together[site].meta["recorded_with"] == list(SITES)
    assert together["attn.k"].width == 2 * 8 and together["attn.q"].width == 4 * 8  # kv heads < heads


class TwoSites:
    """A statistic that needs two sites: keeps the sum of each site's activations per layer."""

    sites = ("ffn.down_in", "attn.q")

    def __init__(self):
        self.sums: dict[tuple[str, int], torch.Tensor] = {}

    def begin_batch(self, batch, batch_size, seq_len):
        pass

    def update(self, layer, activations, site="ffn.act"):
        self.sums[site, layer] = self.sums.get((site, layer), 0) + activations.double().sum((0, 1))

    def end_batch(self):
        pass


class FakeProvider:
    """A site provider that is not a SiteMap (as attention capture will be): hands over ``(layer, dict)``."""

    site = "attn.fake"

    def __init__(self, model):
        self.inner = locate_site(model, "attn.v")
        self.num_layers = self.inner.num_layers

    @contextmanager
    def hooks(self, fn):
        with site_hooks(self.inner, lambda layer, t: fn(layer, {"v": t})):
            yield


class Fake:
    sites = ("attn.fake",)

    def __init__(self):
        self.calls = []

    def begin_batch(self, batch, batch_size, seq_len):
        pass

    def update(self, layer, value, site=None):
        self.calls.append((site, layer, tuple(value["v"].shape)))

    def end_batch(self):
        pass


def test_statistics_get_the_sites_they_declare_and_the_forward_stops_after_the_last(tokenizer):
    model = tiny_model("llama", vocab_size=300)
    ids = torch.tensor([tokenizer("abc def ghi", add_special_tokens=False)["input_ids"]] * 2)
    two, fake = TwoSites(), Fake()
    stats = StatsAccumulator(["aa"], 2, 64, site="ffn.act")
    sites = [locate_site(model, name) for name in ("ffn.act", "ffn.down_in", "attn.q")] + [FakeProvider(model)]
    norm_calls = []  # after locate_site, whose check runs the whole model
    model.model.norm.register_forward_hook(lambda *args: norm_calls.append(1))
    run_batches(model, sites, [Batch(BatchInfo("aa"), ids)], [two, fake, stats], progress=False)
    assert norm_calls == []  # ended after the last site of the last layer
    assert [call[:2] for call in fake.calls] == [("attn.fake", 0), ("attn.fake", 1)]
    for site in TwoSites.sites:
        for layer in range(2):
            expected = alone(model, site, ids[0].tolist())[layer].double().sum(0) * 2
            # a batch of two rows and one row alone differ in float32 rounding (about 1e-7)
            torch.testing.assert_close(two.sums[site, layer], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ln.LangNeuronsError, match=r"TwoSites needs site\(s\) attn.q, which this pass does not"):
        run_batches(model, ["ffn.down_in"], [Batch(BatchInfo("aa"), ids)], [two], progress=False)
    with pytest.raises(ln.LangNeuronsError, match="declares no sites, but 2 sites are attached"):
        run_batches(model, ["ffn.act", "attn.q"], [Batch(BatchInfo("aa"), ids)],
                    [StatsAccumulator(["aa"], 2, 64)], progress=False)


def brute_sums(values: torch.Tensor):
    flat = values.reshape(-1, values.shape[-1]).double()
    return (flat > 0).sum(0), flat.sum(0), (flat * flat).sum(0)


@pytest.mark.parametrize("make", ["accumulator", "stats"])
def test_mixed_language_batch_equals_per_language_batches_on_hand_made_tensors(make):
    generator = torch.Generator().manual_seed(1)
    values = torch.randn(5, 6, 8, generator=generator)
    rows = ["bb", "aa", "bb", "cc", "aa"]
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[0, :2] = mask[3, :4] = mask[4, :1] = False  # left padding
    if make == "accumulator":
        build = lambda: StatsAccumulator(["aa", "bb", "cc"], 2, 8, reduce_dtype=torch.float64)  # noqa: E731
    else:
        build = lambda: ln.ActivationStats.empty(["aa", "bb", "cc"], 2, 8, reduce_dtype=torch.float64)  # noqa: E731
    mixed, split = build(), build()
    mixed.begin_batch(BatchInfo(languages=rows, token_mask=mask), 5, 6)
    mixed.update(1, values)
    mixed.end_batch()
    for lang in ("aa", "bb", "cc"):
        index = torch.tensor([i for i, row in enumerate(rows) if row == lang])
        split.begin_batch(BatchInfo(lang, token_mask=mask[index]), len(index), 6)
        split.update(1, values[index])
        split.end_batch()
        k = mixed.languages.index(lang)
        positive, total, squares = brute_sums(values[index][mask[index]])
        assert torch.equal(mixed.positive_count[k, 1], positive)
        torch.testing.assert_close(mixed.activation_sum[k, 1], total, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(mixed.activation_sq_sum[k, 1], squares, rtol=1e-12, atol=1e-12)
    assert mixed.token_count.tolist() == split.token_count.tolist() == [6 + 5, 4 + 6, 2]
    for name in ("positive_count", "activation_sum", "activation_sq_sum"):
        torch.testing.assert_close(getattr(mixed, name), getattr(split, name), rtol=1e-12, atol=1e-12)
    assert not mixed.activation_sum[:, 0].any()


@pytest.mark.parametrize("side", ["left", "right"])
def test_mixed_language_batches_through_the_model_equal_per_language_batches(tokenizer, side):
    model = tiny_model("gpt2", vocab_size=300)
    site_map = locate_site(model, "ffn.act")
    tokenized = tokenize_parallel(ParallelCorpus(LINES), tokenizer)
    mixed = StatsAccumulator(list(LINES), 2, site_map.width, reduce_dtype=torch.float64, site="ffn.act")
    batches = [Batch(BatchInfo(languages=b.languages, sample_ids=b.item_ids), b.input_ids, b.attention_mask)
               for b in parallel_batches(tokenized, 4, side)]
    assert any(b.info.mixed for b in batches)
    run_batches(model, site_map, batches, [mixed], progress=False)
    split = StatsAccumulator(list(LINES), 2, site_map.width, reduce_dtype=torch.float64, site="ffn.act")
    for lang in LINES:  # each language alone, each text unpadded: the brute force
        for line in LINES[lang]:
            ids = torch.tensor([tokenizer(line, add_special_tokens=False)["input_ids"]])
            run_batches(model, site_map, [Batch(BatchInfo(lang), ids)], [split], progress=False)
    assert torch.equal(mixed.token_count, split.token_count)
    assert torch.equal(mixed.positive_count, split.positive_count)
    torch.testing.assert_close(mixed.activation_sum, split.activation_sum, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mixed.activation_sq_sum, split.activation_sq_sum, rtol=1e-5, atol=1e-6)
