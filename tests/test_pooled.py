"""Per-sample pooled vectors on a parallel corpus equal a sample-by-sample computation; alignment errors."""

from __future__ import annotations

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
