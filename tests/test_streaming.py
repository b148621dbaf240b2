"""Streamed corpora make exactly the windows, provenance and errors of the in-memory packing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from langneurons.data.corpus import load_corpus, read_documents
from langneurons.errors import LangNeuronsError
from langneurons.recording.schedule import batch_schedule
from langneurons.data.streaming import iter_documents, open_corpus, scan_file

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def streamed(corpus) -> dict[str, torch.Tensor]:
    return {lang: torch.stack(list(corpus.windows(lang))) for lang in corpus.languages}


@pytest.mark.parametrize("seq_len, max_tokens", [(16, None), (16, 64), (7, 50), (64, None)])
def test_streamed_windows_equal_packed(corpus_dir, tokenizer, seq_len, max_tokens):
    packed = load_corpus(corpus_dir, tokenizer, seq_len, max_tokens=max_tokens)
    corpus = open_corpus(corpus_dir, tokenizer, seq_len, max_tokens=max_tokens)
    windows = streamed(corpus)
    assert list(windows) == packed.languages
    for lang in packed.languages:
        assert torch.equal(windows[lang], packed.windows[lang])
    assert corpus.provenance() == packed.provenance()


def test_chunk_boundaries_and_odd_line_breaks(tmp_path, tokenizer, monkeypatch):
    """More documents than one tokenizer chunk, CRLF, lone CR, blank lines, jsonl: same as read_documents."""
    import langneurons.data.streaming as streaming

    monkeypatch.setattr(streaming, "TOKENIZE_CHUNK", 3)  # many chunk boundaries inside the small file
    lines = [f"doc {i} abc" + ("\r\n" if i % 3 == 0 else "\n") for i in range(20)]
    (tmp_path / "aa.txt").write_bytes(("".join(lines) + "x\ry\n\n  \nlast").encode())
    records = [json.dumps({"text": f"текст {i}"}) for i in range(7)] + ["", json.dumps({"text": "  "})]
    (tmp_path / "bb.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    for path in tmp_path.iterdir():
        assert list(iter_documents(path)) == read_documents(path)
    packed = load_corpus(tmp_path, tokenizer, 5)
    corpus = open_corpus(tmp_path, tokenizer, 5)
    for lang, windows in streamed(corpus).items():
        assert torch.equal(windows, packed.windows[lang])
    assert corpus.provenance() == packed.provenance()


def test_errors_match_read_documents(tmp_path):
    bad = tmp_path / "aa.txt"
    bad.write_bytes(b"fine line\nsecond \xff line\n")
    with pytest.raises(LangNeuronsError) as streamed_error:
        scan_file("aa", bad)
    with pytest.raises(LangNeuronsError) as packed_error:
        read_documents(bad)
    assert str(streamed_error.value) == str(packed_error.value)  # same byte offset (17)
    assert "byte 17" in str(streamed_error.value)
    bad_json = tmp_path / "bb.jsonl"
    bad_json.write_text('{"text": "a"}\n{"txt": "b"}\n')
    with pytest.raises(LangNeuronsError, match="line 2: not a JSON object"):
        scan_file("bb", bad_json)
    empty = tmp_path / "cc.txt"
    empty.write_text("\n  \n")
    with pytest.raises(LangNeuronsError, match="is empty"):
        scan_file("cc", empty)


def test_schedule_shards_and_batches(corpus_dir, tokenizer):
    packed = load_corpus(corpus_dir, tokenizer, 16, max_tokens=16 * 7)
    planned = list(batch_schedule(packed, batch_size=2, shard_index=1, num_shards=3))
    assert [p.index for p in planned] == list(range(len(planned)))
    for lang in packed.languages:
        mine = [p for p in planned if p.language == lang]
        assert [i for p in mine for i in p.window_ids] == [1, 4]  # windows 1 and 4 of 0..6
        assert torch.equal(torch.cat([p.input_ids() for p in mine]), packed.windows[lang][[1, 4]])


@pytest.mark.skipif(not (SHARED / "bible_full").is_dir(), reason="shared data not available")
def test_real_multilingual_text(tokenizer):
    """Real text in several scripts (the byte-level tokenizer splits what it does not know into bytes)."""
    langs = ["en", "zh", "ar"]
    packed = load_corpus(SHARED / "bible_full", tokenizer, 64, langs=langs, max_tokens=64 * 40)
    corpus = open_corpus(SHARED / "bible_full", tokenizer, 64, langs=langs, max_tokens=64 * 40)
    for lang, windows in streamed(corpus).items():
        assert torch.equal(windows, packed.windows[lang])
    assert corpus.provenance() == packed.provenance()


@pytest.mark.parametrize("max_tokens", [None, 48, 10_000_000])
def test_expected_tokens_bounds_what_is_run(corpus_dir, tokenizer, max_tokens):
    from langneurons.recording.recorder import expected_tokens

    packed = load_corpus(corpus_dir, tokenizer, 16, max_tokens=max_tokens)
    ran = sum(int(w.numel()) for w in packed.windows.values())
    assert expected_tokens(packed) == ran and expected_tokens(packed, 2) == ran // 2
    bound = expected_tokens(open_corpus(corpus_dir, tokenizer, 16, max_tokens=max_tokens))
    if max_tokens is None:
        assert bound is None  # a streamed corpus without a cap: unknown until it has been read
    else:
        assert bound >= ran
        if max_tokens == 48:  # every language has 3 windows of text: the bound is exact
            assert bound == ran == len(packed.languages) * 48
