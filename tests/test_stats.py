"""Statistics artefacts: shards merge to one run, save/load round-trips, corruption is detected."""

from __future__ import annotations

import json

import pytest
import torch

import langneurons as ln
from langneurons.data.corpus import load_corpus
from langneurons.testbed.tiny import tiny_model


@pytest.fixture(scope="module")
def packed(corpus_dir, tokenizer):
    return load_corpus(corpus_dir, tokenizer, seq_len=16, max_tokens=96)


def test_sharded_and_merged_equals_one_run(packed, tokenizer):
    model = tiny_model("llama", vocab_size=300)
    whole = ln.record(model, packed, tokenizer=tokenizer, batch_size=4, reduce_dtype="float64", progress=False)
    shards = [ln.record(model, packed, tokenizer=tokenizer, batch_size=2, shard_index=i, num_shards=3,
                        reduce_dtype="float64", progress=False) for i in range(3)]
    merged = shards[0].merge(shards[1]).merge(shards[2])
    assert merged.languages == whole.languages
    assert torch.equal(merged.positive_count, whole.positive_count)
    assert torch.equal(merged.token_count, whole.token_count)
    torch.testing.assert_close(merged.activation_sum, whole.activation_sum, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(merged.activation_sq_sum, whole.activation_sq_sum, rtol=1e-9, atol=1e-9)


def test_batch_size_does_not_change_counts(packed, tokenizer):
    model = tiny_model("gpt2", vocab_size=300)
    one = ln.record(model, packed, tokenizer=tokenizer, batch_size=1, reduce_dtype="float64", progress=False)
    many = ln.record(model, packed, tokenizer=tokenizer, batch_size=5, reduce_dtype="float64", progress=False)
    assert torch.equal(one.positive_count, many.positive_count)
    torch.testing.assert_close(one.activation_sum, many.activation_sum, rtol=1e-9, atol=1e-9)


def test_merge_unites_languages_and_rejects_other_shapes():
    a = ln.ActivationStats.empty(["en", "fr"], 2, 4)
    b = ln.ActivationStats.empty(["fr", "zh"], 2, 4)
    a.add("en", 0, torch.tensor([[1.0, -1.0, 2.0, 0.0]]))
    b.add("fr", 1, torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.5, 0.0, 0.0, 0.0]]))
    merged = a.merge(b)
    assert merged.languages == ["en", "fr", "zh"]
    assert merged.token_count.tolist() == [1, 2, 0]
    assert merged.positive_count[0, 0].tolist() == [1, 0, 1, 0]
    assert merged.positive_count[1, 1].tolist() == [2, 1, 1, 1]
    assert merged.activation_sum[1, 1].tolist() == [1.5, 1.0, 1.0, 1.0]
    with pytest.raises(ln.LangNeuronsError, match="cannot merge"):
        a.merge(ln.ActivationStats.empty(["en"], 3, 4))


def test_save_load_round_trip_and_provenance(packed, tokenizer, tmp_path):
    stats = ln.record(tiny_model("llama", vocab_size=300), packed, tokenizer=tokenizer, progress=False)
    stats.save(tmp_path / "stats")
    back = ln.load_stats(tmp_path / "stats")
    for name in ("positive_count", "activation_sum", "activation_sq_sum", "token_count"):
        assert torch.equal(getattr(back, name), getattr(stats, name))
    meta = json.loads((tmp_path / "stats" / "meta.json").read_text())
    assert meta["kind"] == "activation_stats" and meta["schema_version"] == 1
    assert meta["site"] == "ffn.act" and meta["model_type"] == "llama" and meta["dtype"] == "float32"
    assert set(meta["corpus"]["files"]) == {"aa", "bb", "cc"}
    assert len(meta["corpus"]["files"]["aa"]["sha256"]) == 64
    assert meta["environment"]["langneurons"] == ln.__version__
    assert meta["token_count"] == {"aa": 96, "bb": 96, "cc": 96}


def test_corrupt_artefact_is_reported(packed, tokenizer, tmp_path):
    stats = ln.record(tiny_model("llama", vocab_size=300), packed, tokenizer=tokenizer, progress=False)
    stats.save(tmp_path / "stats")
    tensors = tmp_path / "stats" / "tensors.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(ln.LangNeuronsError, match="corrupt"):
        ln.load_stats(tmp_path / "stats")
    tensors.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ln.LangNeuronsError, match="corrupt"):
        ln.load_stats(tmp_path / "stats")


def test_derived_quantities():
    stats = ln.ActivationStats.empty(["en"], 1, 3)
    acts = torch.tensor([[1.0, -2.0, 0.0], [3.0, 2.0, 0.0]])
    stats.add("en", 0, acts)
    assert stats.activation_probability()[0, 0].tolist() == [1.0, 0.5, 0.0]
    assert stats.mean_activation()[0, 0].tolist() == [2.0, 0.0, 0.0]
    assert stats.activation_variance()[0, 0].tolist() == [1.0, 4.0, 0.0]
