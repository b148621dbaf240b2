"""What keeps recording fast: early stop after the last hooked layer, SDPA kept, on-device reductions."""

from __future__ import annotations

import pytest
import torch

import langneurons as ln
from langneurons.recording.accumulator import StatsAccumulator
from langneurons.data.corpus import load_corpus
from langneurons.recording.recorder import run_statistics
from langneurons.model.sites import locate_site
from langneurons.stats.base import BatchInfo
from langneurons.testbed.tiny import tiny_model


def brute(values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    flat = values.reshape(-1, values.shape[-1]).double()
    return (flat > 0).sum(0), flat.sum(0), (flat * flat).sum(0)


@pytest.mark.parametrize("stop_early", [True, False])
def test_forward_stops_after_the_last_hooked_layer(corpus_dir, tokenizer, stop_early, monkeypatch):
    model = tiny_model("llama", vocab_size=300)
    site_map = locate_site(model, "ffn.act")
    calls = {"norm": 0, "down_last": 0}
    model.model.norm.register_forward_hook(lambda *a: calls.__setitem__("norm", calls["norm"] + 1))
    model.model.layers[-1].mlp.down_proj.register_forward_hook(
        lambda *a: calls.__setitem__("down_last", calls["down_last"] + 1))
    packed = load_corpus(corpus_dir, tokenizer, seq_len=16, max_tokens=32)
    stats = StatsAccumulator(packed.languages, site_map.num_layers, site_map.width)
    import langneurons.recording.recorder as recorder

    original = recorder.run_batches
    monkeypatch.setattr(recorder, "run_batches",
                        lambda *args, **kwargs: original(*args, **{**kwargs, "stop_early": stop_early}))
    run_statistics(model, site_map, packed.windows, [stats], batch_size=2, progress=False)
    batches = 3  # 3 languages x 2 windows, batch size 2
    expected = 0 if stop_early else batches
    assert calls == {"norm": expected, "down_last": expected}
    reference = StatsAccumulator(packed.languages, site_map.num_layers, site_map.width)
    monkeypatch.setattr(recorder, "run_batches", original)
    run_statistics(model, site_map, packed.windows, [reference], batch_size=2, progress=False)
    for mine, theirs in zip(stats.tensors(), reference.tensors()):
        assert torch.equal(mine, theirs)


def test_recording_keeps_sdpa(corpus_dir, tokenizer, monkeypatch):
    model = tiny_model("llama", vocab_size=300, attn_implementation="sdpa")
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *args, **kwargs: calls.append(1) or sdpa(*args, **kwargs))
    ln.record(model, corpus_dir, tokenizer=tokenizer, seq_len=16, max_tokens=32, progress=False)
    assert model.config._attn_implementation == "sdpa"
    assert len(calls) >= 3 * 2  # one call per layer and batch (plus the site check)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("strategy", ["blocks", "direct"])
def test_reductions_equal_brute_force(strategy, dtype, monkeypatch):
    import langneurons.recording.accumulator as accumulator

    monkeypatch.setattr(accumulator, "DIRECT_CHUNK_ROWS", 7)  # several chunks in a small batch
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(2, 9, 40, generator=generator).to(dtype) for _ in range(3)]
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 5:] = False  # right padding of the second sequence
    acc = StatsAccumulator(["xx", "yy"], num_layers=2, width=40, reduce_dtype=torch.float64, strategy=strategy)
    for index, values in enumerate(batches):
        masked = index == 2
        acc.begin_batch(BatchInfo("yy", token_mask=mask if masked else None), 2, 9)
        acc.update(1, values)
        acc.end_batch()
    assert acc.token_count.tolist() == [0, 2 * 18 + 14]
    rows = torch.cat([b.reshape(-1, 40) for b in batches[:2]] + [batches[2][mask]])
    positive, total, squares = brute(rows)
    assert torch.equal(acc.positive_count[1, 1], positive) and not acc.positive_count[0].any()
    torch.testing.assert_close(acc.activation_sum[1, 1], total, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(acc.activation_sq_sum[1, 1], squares, rtol=1e-12, atol=1e-12)
    assert not acc.activation_sum[:, 0].any()


def test_direct_strategy_through_the_recorder(corpus_dir, tokenizer):
    model = tiny_model("qwen2", vocab_size=300)
    kwargs = dict(tokenizer=tokenizer, seq_len=16, max_tokens=48, batch_size=2, progress=False)
    blocks = ln.record(model, corpus_dir, reduce_dtype="float64", **kwargs)
    exact = ln.record(model, corpus_dir, reduction="direct", reduce_dtype="float64", **kwargs)
    fast = ln.record(model, corpus_dir, reduction="direct", **kwargs)  # float32 squares of float32 activations
    assert fast.meta["parameters"]["reduction"] == "direct"
    for direct, tolerance in ((exact, 1e-12), (fast, 1e-6)):
        assert torch.equal(blocks.positive_count, direct.positive_count)
        torch.testing.assert_close(blocks.activation_sum, direct.activation_sum, rtol=tolerance, atol=1e-9)
        torch.testing.assert_close(blocks.activation_sq_sum, direct.activation_sq_sum, rtol=tolerance, atol=1e-9)
