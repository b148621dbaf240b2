"""Per-sample pooled vectors on a parallel corpus equal a sample-by-sample computation; alignment errors."""

from __future__ import annotations

import json

import pytest
import torch

import langneurons as ln
from langneurons.data.corpus import load_parallel
from langneurons.recording.pooled import record_pooled
from langneurons.model.sites import locate_site, site_hooks
from langneurons.stats.pooled import load_pooled
from langneurons.testbed.tiny import tiny_model


@pytest.fixture
def parallel_dir(tmp_path):
    lines = {"aa": ["abc def", "ghij", "a b c d e f g", "hi"], "bb": ["абв где", "жзик", "а б в г д", "ик"]}
    for lang, rows in lines.items():
        (tmp_path / f"{lang}.txt").write_text("\n".join(rows) + "\n")
    return tmp_path


@pytest.mark.parametrize("mode", ["mean", "sum", "last"])
@pytest.mark.parametrize("site", ["ffn.act", "layer.out"])
def test_pooled_vectors_match_one_by_one(parallel_dir, tokenizer, mode, site, tmp_path):
    model = tiny_model("llama", vocab_size=300)
    pooled = record_pooled(model, parallel_dir, site=site, mode=mode, batch_size=3, tokenizer=tokenizer,
                           progress=False)
    texts = load_parallel(parallel_dir)
    site_map = locate_site(model, site)
    for lang, lines in texts.items():
        for s, line in enumerate(lines):
            ids = torch.tensor([tokenizer(line, add_special_tokens=False)["input_ids"]])
            seen = {}
            with torch.no_grad(), site_hooks(site_map, lambda layer, t: seen.__setitem__(layer, t[0].clone())):
                model(input_ids=ids)
            for layer in range(site_map.num_layers):
                acts = seen[layer]
                expected = {"mean": acts.mean(0), "sum": acts.sum(0), "last": acts[-1]}[mode]
                torch.testing.assert_close(pooled.language(lang)[s, layer], expected, rtol=1e-4, atol=1e-5)
    pooled.save(tmp_path / "pooled")
    assert torch.equal(load_pooled(tmp_path / "pooled").vectors, pooled.vectors)


def test_misaligned_parallel_corpus_is_a_clear_error(tmp_path):
    (tmp_path / "aa.txt").write_text("one\ntwo\n")
    (tmp_path / "bb.txt").write_text("one\n")
    with pytest.raises(ln.LangNeuronsError, match=r"not aligned: line counts differ \(aa.txt 2, bb.txt 1\)"):
        load_parallel(tmp_path)


def test_large_vectors_are_float16_or_memory_mapped_and_say_so(parallel_dir, tokenizer, tmp_path):
    model = tiny_model("llama", vocab_size=300)
    kwargs = dict(site="ffn.act", mode="mean", batch_size=3, tokenizer=tokenizer, progress=False)
    small = record_pooled(model, parallel_dir, **kwargs)
    elements = small.vectors.numel()  # 2 languages x 4 samples x 2 layers x 64
    assert small.vectors.dtype == torch.float32 and small.storage["kind"] == "memory"
    assert small.storage["elements"] == elements
    half = record_pooled(model, parallel_dir, large_threshold=elements - 1, **kwargs)
    assert half.vectors.dtype == torch.float16 and half.storage == {
        "kind": "memory", "dtype": "float16", "elements": elements, "threshold": elements - 1}
    mapped = record_pooled(model, parallel_dir, large_threshold=elements - 1, storage_dir=tmp_path / "work", **kwargs)
    assert mapped.storage["kind"] == "memmap" and mapped.storage["dtype"] == "float16"
    assert (tmp_path / "work" / "vectors.npy").is_file()
    for vectors in (half, mapped):
        torch.testing.assert_close(vectors.vectors.float(), small.vectors, rtol=2e-3, atol=2e-3)
        assert vectors.vectors.abs().sum() > 0
    for name, vectors in (("half", half), ("mapped", mapped)):
        vectors.save(tmp_path / name)
        back = load_pooled(tmp_path / name)
        assert torch.equal(back.vectors, vectors.vectors) and back.vectors.dtype == torch.float16
        meta = json.loads((tmp_path / name / "meta.json").read_text())
        assert meta["storage"]["kind"] == vectors.storage["kind"] and meta["storage"]["dtype"] == "float16"
        assert meta["schema_version"] == 2
    mapped.save(tmp_path / "work")  # in place: the memory map is the artefact's vectors.npy
    assert torch.equal(load_pooled(tmp_path / "work").vectors, mapped.vectors)
    npy = tmp_path / "mapped" / "vectors.npy"
    data = bytearray(npy.read_bytes())
    data[-1] ^= 0xFF
    npy.write_bytes(bytes(data))
    with pytest.raises(ln.LangNeuronsError, match="corrupt"):
        load_pooled(tmp_path / "mapped")


def test_memmap_needs_a_directory_and_version_1_files_load(tmp_path):
    from langneurons.sets.artefacts import write_artefact
    from langneurons.stats.pooled import PooledVectors

    with pytest.raises(ln.LangNeuronsError, match="needs a directory"):
        PooledVectors.empty(["aa"], 2, 1, 3, storage="memmap")
    vectors = torch.arange(12, dtype=torch.float32).view(2, 2, 1, 3)
    write_artefact(tmp_path / "v1", "pooled_vectors", 1, {"vectors": vectors},
                   {"languages": ["aa", "bb"], "mode": "last"})
    back = load_pooled(tmp_path / "v1")
    assert torch.equal(back.vectors, vectors) and back.storage["kind"] == "memory" and back.mode == "last"


def test_several_sites_pooled_in_one_pass(parallel_dir, tokenizer):
    model = tiny_model("gpt2", vocab_size=300)
    both = record_pooled(model, parallel_dir, sites=["ffn.act", "layer.out"], mode="last", batch_size=4,
                         tokenizer=tokenizer, padding_side="left", progress=False)
    for site in ("ffn.act", "layer.out"):
        one = record_pooled(model, parallel_dir, site=site, mode="last", batch_size=4, tokenizer=tokenizer,
                            padding_side="left", progress=False)
        assert torch.equal(both[site].vectors, one.vectors) and both[site].meta["site"] == site


@pytest.mark.parametrize("side", ["left", "right"])
def test_opt_pooled_last_and_mean_equal_unpadded_runs(tokenizer, side):
    """OPT hands its FFN site a flattened [B * T, W] tensor; pooling must still be per row."""
    from langneurons.model.sites import locate_site, site_hooks
    from langneurons.recording.pooled import record_pooled
    from langneurons.testbed.tiny import tiny_model

    model = tiny_model("opt", vocab_size=300)
    texts = {"aa": ["abc def ghi jkl", "ab"], "bb": ["абв где", "абвгд ежз ик абв"]}
    site_map = locate_site(model, "ffn.act")
    for mode in ("last", "mean"):
        pooled = record_pooled(model, texts, mode=mode, tokenizer=tokenizer, batch_size=4, padding_side=side,
                               progress=False)
        for k, lang in enumerate(texts):
            for s, text in enumerate(texts[lang]):
                ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
                seen = {}
                with torch.no_grad(), site_hooks(site_map, lambda layer, t: seen.__setitem__(layer, t.clone())):
                    model(input_ids=ids)
                for layer in range(site_map.num_layers):
                    acts = seen[layer].reshape(ids.shape[1], -1)
                    expected = acts[-1] if mode == "last" else acts.mean(0)
                    assert torch.allclose(pooled.vectors[k, s, layer], expected, atol=1e-5), (mode, lang, s, layer)
