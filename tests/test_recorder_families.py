"""Recorded statistics equal a brute-force computation, for every registered family."""

from __future__ import annotations

import pytest
import torch

import langneurons as ln
from langneurons.data.corpus import load_corpus
from langneurons.model.sites import locate_site
from langneurons.testbed.tiny import TINY_CONFIGS, tiny_model


def brute_force(model, site_map, windows: dict[str, torch.Tensor]):
    """Capture the full activation tensors with plain hooks and reduce them afterwards in float64."""
    captured: dict[int, list[torch.Tensor]] = {}
    handles = []
    for layer, module in enumerate(site_map.modules):
        if site_map.side == "output":
            hook = lambda m, a, out, layer=layer: captured[layer].append(out.detach().clone())  # noqa: E731
            handles.append(module.register_forward_hook(hook))
        else:
            hook = lambda m, a, layer=layer: captured[layer].append(a[0].detach().clone())  # noqa: E731
            handles.append(module.register_forward_pre_hook(hook))
    result = {}
    with torch.no_grad():
        for lang, lang_windows in windows.items():
            for layer in range(site_map.num_layers):
                captured[layer] = []
            for row in lang_windows:  # batch size 1, like the reference code
                model(input_ids=row[None], use_cache=False)
            acts = torch.stack([torch.cat([a.reshape(-1, a.shape[-1]) for a in captured[layer]])
                                for layer in range(site_map.num_layers)]).double()  # L, N, I
            result[lang] = ((acts > 0).sum(1), acts.sum(1), (acts**2).sum(1), acts.shape[1], acts.abs().sum(1))
    for handle in handles:
        handle.remove()
    return result


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
@pytest.mark.parametrize("site", ["ffn.act", "ffn.down_in"])
def test_recorded_statistics_match_brute_force(family, site, corpus_dir, tokenizer):
    model = tiny_model(family, vocab_size=300)
    packed = load_corpus(corpus_dir, tokenizer, seq_len=16, max_tokens=64)
    site_map = locate_site(model, site)
    expected = brute_force(model, site_map, packed.windows)
    fast = ln.record(model, packed, tokenizer=tokenizer, batch_size=3, site=site, progress=False)
    exact = ln.record(model, packed, tokenizer=tokenizer, batch_size=3, site=site, reduce_dtype="float64",
                      progress=False)
    for stats in (fast, exact):
        assert stats.languages == list(packed.windows)
        assert stats.meta["site"] == site and stats.meta["model_type"] == family
        for k, lang in enumerate(stats.languages):
            positive, total, squares, count, magnitude = expected[lang]
            assert int(stats.token_count[k]) == count == 64
            assert torch.equal(stats.positive_count[k], positive)  # counts are exact in both modes
            if stats is exact:  # float64 reductions: 1e-6 relative to the sum itself
                torch.testing.assert_close(stats.activation_sum[k], total, rtol=1e-6, atol=1e-12)
                torch.testing.assert_close(stats.activation_sq_sum[k], squares, rtol=1e-6, atol=1e-12)
            else:  # float32 blocks: 1e-6 relative to the sum of magnitudes (the bound of a float sum)
                assert bool(((stats.activation_sum[k] - total).abs() <= 1e-6 * magnitude + 1e-12).all())
                torch.testing.assert_close(stats.activation_sq_sum[k], squares, rtol=1e-6, atol=1e-12)
    assert 0 < int(fast.positive_count.sum()) < fast.positive_count.numel() * 64


def test_gated_sites_differ_and_width_is_ffn(corpus_dir, tokenizer):
    model = tiny_model("llama", vocab_size=300)
    act, down = locate_site(model, "ffn.act"), locate_site(model, "ffn.down_in")
    assert act.width == down.width == model.config.intermediate_size
    packed = load_corpus(corpus_dir, tokenizer, seq_len=16, max_tokens=32)
    a = ln.record(model, packed, tokenizer=tokenizer, site="ffn.act", progress=False)
    d = ln.record(model, packed, tokenizer=tokenizer, site="ffn.down_in", progress=False)
    assert not torch.equal(a.activation_sum, d.activation_sum)  # act(gate) * up differs from act(gate)
