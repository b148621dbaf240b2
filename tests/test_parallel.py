"""Parallel corpora (aligned .txt / one .jsonl), item-major batches on either padding side, inputs cut from the
start and counted, and the one packer (the in-memory corpus equals an independent packing, bit for bit)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import langneurons as ln
from langneurons.data.corpus import load_corpus, load_parallel, padded_batches
from langneurons.data.parallel import (
    ParallelCorpus,
    load_parallel_corpus,
    parallel_batches,
    tokenize_parallel,
)
from langneurons.data.streaming import open_corpus
from langneurons.errors import LangNeuronsWarning

LINES = {"aa": ["abc def", "ghij", "a b c d e f g", "hi", "jj"],
         "bb": ["абв где", "жзик", "а б в г д", "ик", "ее ее"],
         "cc": ["αβγ", "δεζη θ", "ικ", "αα ββ γγ δδ", "ε"]}


@pytest.fixture
def txt_dir(tmp_path):
    for lang, rows in LINES.items():
        (tmp_path / f"{lang}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return tmp_path


def test_txt_and_jsonl_give_the_same_corpus(txt_dir, tmp_path):
    path = tmp_path / "jsonl" / "items.jsonl"
    path.parent.mkdir()
    records = [{**{lang: LINES[lang][i] for lang in LINES}, "answer": f"ans{i}", "id": i} for i in range(5)]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n\n", encoding="utf-8")
    from_txt, from_jsonl = load_parallel_corpus(txt_dir), load_parallel_corpus(path)
    assert from_txt.languages == from_jsonl.languages == ["aa", "bb", "cc"]  # "id" is an int: not a language
    for lang in LINES:
        assert from_txt.texts(lang) == from_jsonl.texts(lang) == LINES[lang]
    assert from_jsonl.fields == {"answer": [f"ans{i}" for i in range(5)], "id": list(range(5))}
    assert from_jsonl.item(3) == {"aa": "hi", "bb": "ик", "cc": "αα ββ γγ δδ", "answer": "ans3", "id": 3}
    assert len(from_jsonl.provenance()["sha256"]) == 64 and from_txt.provenance()["format"] == "txt"
    assert load_parallel(txt_dir) == LINES  # the 0.1 function, still importable from data.corpus
    picked = from_jsonl.select(["cc", "aa"], items=[4, 0])
    assert picked.texts("cc") == ["ε", "αβγ"] and picked.fields["answer"] == ["ans4", "ans0"]


def test_misaligned_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "aa.txt").write_text("one\ntwo\nthree\n")
    (tmp_path / "bb.txt").write_text("one\ntwo\n")
    with pytest.raises(ln.LangNeuronsError) as error:
        load_parallel_corpus(tmp_path)
    assert str(error.value) == (f"parallel corpus {str(tmp_path)!r} is not aligned: line counts differ "
                                "(aa.txt 3, bb.txt 2)")
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text('{"en": "a", "fr": "b"}\n{"en": "c"}\n')
    with pytest.raises(ln.LangNeuronsError, match=r"not aligned: line 2 has no field 'fr'$") as error:
        load_parallel_corpus(jsonl)
    assert "\n" not in str(error.value)
    jsonl.write_text('{"en": "a"}\nnot json\n')
    with pytest.raises(ln.LangNeuronsError, match="line 2: not a JSON object"):
        load_parallel_corpus(jsonl)
    with pytest.raises(ln.LangNeuronsError, match="item counts differ"):
        ParallelCorpus({"en": ["a", "b"], "fr": ["a"]})


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("add_bos", [False, True])
def test_batches_keep_items_together_and_rows_exact(txt_dir, tokenizer, side, add_bos):
    corpus = load_parallel_corpus(txt_dir)
    tokenized = tokenize_parallel(corpus, tokenizer, add_bos=add_bos)
    batches = list(parallel_batches(tokenized, batch_size=7, padding_side=side))  # 7 rows // 3 languages = 2 items
    assert [b.item_ids.tolist() for b in batches] == [[0, 0, 0, 1, 1, 1], [2, 2, 2, 3, 3, 3], [4, 4, 4]]
    bos = tokenizer.bos_token_id
    for batch in batches:
        assert batch.languages == ["aa", "bb", "cc"] * (len(batch.languages) // 3)
        for row, (lang, item) in enumerate(zip(batch.languages, batch.item_ids.tolist())):
            expected = tokenizer(LINES[lang][item], add_special_tokens=False)["input_ids"]
            expected = ([bos] if add_bos else []) + expected
            real = batch.attention_mask[row].bool()
            assert batch.input_ids[row][real].tolist() == expected
            positions = real.nonzero().flatten()
            assert bool((positions[1:] - positions[:-1] == 1).all())  # contiguous, on the chosen side
            assert (positions[0] == 0) if side == "right" else (positions[-1] == real.numel() - 1)
            assert int(batch.last_index[row]) == int(positions[-1])
            counted = batch.token_mask[row].nonzero().flatten().tolist()
            assert counted == positions.tolist()[1:] if add_bos else counted == positions.tolist()


def test_batch_smaller_than_the_languages_still_holds_one_item(txt_dir, tokenizer):
    tokenized = tokenize_parallel(load_parallel_corpus(txt_dir), tokenizer)
    assert [b.item_ids.tolist() for b in parallel_batches(tokenized, batch_size=2)][:2] == [[0, 0, 0], [1, 1, 1]]


@pytest.mark.parametrize("keep", ["end", "start"])
def test_long_inputs_are_cut_and_counted(txt_dir, tokenizer, keep):
    corpus = load_parallel_corpus(txt_dir)
    full = {lang: [tokenizer(t, add_special_tokens=False)["input_ids"] for t in LINES[lang]] for lang in LINES}
    limit = 4
    longer = sum(len(ids) > limit for rows in full.values() for ids in rows)
    assert 0 < longer < 15
    with pytest.warns(LangNeuronsWarning, match=rf"^{longer} of 15 inputs are longer than 4 tokens"):
        tokenized = tokenize_parallel(corpus, tokenizer, max_length=limit, keep=keep)
    assert tokenized.cut == tokenized.describe()["cut"] == longer
    for lang in LINES:
        for ids, row in zip(full[lang], tokenized.rows[lang]):
            assert row == (ids[-limit:] if keep == "end" else ids[:limit])  # "end": cut from the START
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tokenize_parallel(corpus, tokenizer, max_length=1000).cut == 0
    with pytest.warns(LangNeuronsWarning, match="cut from the end"):
        list(padded_batches(tokenizer, LINES["aa"], 2, max_length=2))


def reference_pack(tokenizer, documents, seq_len, max_tokens=None):
    """The LAPE packing written out plainly: every document, EOS between, non-overlapping windows, cap."""
    stream = []
    for document in documents:
        if stream and tokenizer.eos_token_id is not None:
            stream.append(tokenizer.eos_token_id)
        stream.extend(tokenizer(document, add_special_tokens=False)["input_ids"])
    usable = len(stream) if max_tokens is None else min(len(stream), max_tokens)
    usable = usable // seq_len * seq_len
    return torch.tensor(stream[:usable]).view(-1, seq_len)


@pytest.mark.parametrize("seq_len, max_tokens", [(16, None), (7, 50), (5, None)])
def test_in_memory_packer_equals_the_streamed_one_and_a_plain_packing(corpus_dir, tokenizer, seq_len, max_tokens,
                                                                       monkeypatch):
    import langneurons.data.streaming as streaming

    monkeypatch.setattr(streaming, "TOKENIZE_CHUNK", 7)  # many chunk boundaries
    packed = load_corpus(corpus_dir, tokenizer, seq_len, max_tokens=max_tokens)
    streamed = open_corpus(corpus_dir, tokenizer, seq_len, max_tokens=max_tokens)
    for lang in packed.languages:
        documents = [line for line in (corpus_dir / f"{lang}.txt").read_text().splitlines() if line.strip()]
        expected = reference_pack(tokenizer, documents, seq_len, max_tokens)
        assert torch.equal(packed.windows[lang], expected)
        assert torch.equal(torch.stack(list(streamed.windows(lang))), expected)
    assert streamed.provenance() == packed.provenance()
