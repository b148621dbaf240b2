"""Corpus files (gzip / xz / bz2 read, other encodings and compressions reported, never skipped) and the one CLI
style (lists, defaults in every help text, exit codes)."""

from __future__ import annotations

import argparse
import bz2
import gzip
import lzma
from pathlib import Path

import pytest
import torch

import langneurons as ln
from langneurons.cli.main import build_parser, main
from langneurons.data.files import open_text, read_text, split_name, text_sha256
from langneurons.errors import LangNeuronsError
from test_data_safety import cli, one_error, snapshot

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compressed_dir(tmp_path_factory, corpus_dir) -> Path:
    """The test corpus with aa gzip-, bb xz- and cc bz2-compressed (cc as JSON lines)."""
    import json

    root = tmp_path_factory.mktemp("compressed")
    (root / "aa.txt.gz").write_bytes(gzip.compress((corpus_dir / "aa.txt").read_bytes()))
    (root / "bb.txt.xz").write_bytes(lzma.compress((corpus_dir / "bb.txt").read_bytes()))
    lines = (corpus_dir / "cc.txt").read_text().splitlines()
    jsonl = "".join(json.dumps({"text": line}, ensure_ascii=False) + "\n" for line in lines)
    (root / "cc.jsonl.bz2").write_bytes(bz2.compress(jsonl.encode()))
    return root


def test_compressed_corpus_gives_the_statistics_of_the_plain_one(compressed_dir, corpus_dir, llama_dir):
    plain = ln.record(str(llama_dir), corpus_dir, seq_len=16, max_tokens=256, progress=False)
    packed = ln.record(str(llama_dir), compressed_dir, seq_len=16, max_tokens=256, progress=False)
    assert packed.languages == plain.languages == ["aa", "bb", "cc"]
    for name in ("positive_count", "activation_sum", "token_count"):
        assert torch.equal(getattr(packed, name), getattr(plain, name)), name
    files = packed.meta["corpus"]["files"]
    assert files["aa"]["file"] == "aa.txt.gz" and files["cc"]["file"] == "cc.jsonl.bz2"
    # a compressed file keeps the checksum of its text (sha256sum of the plain file)
    assert files["aa"]["sha256"] == plain.meta["corpus"]["files"]["aa"]["sha256"] == text_sha256(corpus_dir / "aa.txt")


def test_compressed_files_in_memory_packing_and_prompts(compressed_dir, corpus_dir, tokenizer, tmp_path):
    from langneurons.data.corpus import load_corpus
    from langneurons.evaluation.generation import read_prompts

    plain = load_corpus(corpus_dir, tokenizer, 16, max_tokens=64)
    packed = load_corpus(compressed_dir, tokenizer, 16, max_tokens=64)
    assert all(torch.equal(packed.windows[lang], plain.windows[lang]) for lang in plain.languages)
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "aa.txt.gz").write_bytes(gzip.compress("first question\n\nsecond\n".encode()))
    assert read_prompts(prompts) == {"aa": ["first question", "second"]}
    assert split_name("zh.jsonl.xz") == ("zh", ".jsonl", ".xz") and split_name("zh-Hans.txt") == ("zh-Hans", ".txt", "")


def _command_on(corpus: Path, llama_dir: Path, out: Path) -> list:
    return ["record", "--model", llama_dir, "--corpus", corpus, "--seq-len", 16, "--out", out, "--no-progress"]


@pytest.mark.parametrize("case", ["zstd", "latin1", "utf16", "gzip-named-txt", "truncated-gzip", "bom"])
def test_unreadable_corpus_files_are_one_line_errors(case, tmp_path, corpus_dir, llama_dir, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "aa.txt").write_bytes((corpus_dir / "aa.txt").read_bytes())
    text = (corpus_dir / "bb.txt").read_text()
    name, data, expected = {
        "zstd": ("bb.txt.zst", b"\x28\xb5\x2f\xfd" + b"\x00" * 16, "zstd-compressed, which langneurons cannot read"),
        "latin1": ("bb.txt", "caf\xe9 au lait\n".encode("latin-1"), "is not valid UTF-8 (byte 3)"),
        "utf16": ("bb.txt", text.encode("utf-16"), "is UTF-16 text"),
        "gzip-named-txt": ("bb.txt", gzip.compress(text.encode()), "is gzip-compressed data; name it bb.txt.gz"),
        "truncated-gzip": ("bb.txt.gz", gzip.compress(text.encode())[:-20], "cannot read corpus file"),
        "bom": ("bb.txt", b"\xef\xbb\xbf" + text.encode(), None),
    }[case]
    (corpus / name).write_bytes(data)
    out = tmp_path / "stats"
    before = snapshot(corpus)
    code, err = cli(capsys, *_command_on(corpus, llama_dir, out))
    if expected is None:  # a UTF-8 byte-order mark is dropped, the text read as it is
        assert code == 0, err
        assert read_text(corpus / name) == text
        return
    line = one_error(err)
    assert code == 2 and expected in line and str(corpus / name) in line, line
    assert not out.exists() and snapshot(corpus) == before


def test_open_text_streams_lines_and_names_the_file(tmp_path):
    path = tmp_path / "x.txt.gz"
    path.write_bytes(gzip.compress("a\nbé\n".encode()))
    with open_text(path) as handle:
        assert list(handle) == ["a\n", "bé\n"]
    bad = tmp_path / "y.txt.xz"
    bad.write_bytes(b"not xz at all")
    with pytest.raises(LangNeuronsError, match="y.txt.xz"):
        open_text(bad).read()


def test_a_file_given_as_corpus(tmp_path, corpus_dir, llama_dir, capsys):
    out = tmp_path / "stats"
    code, err = cli(capsys, *_command_on(corpus_dir / "aa.txt", llama_dir, out))
    line = one_error(err)
    assert code == 2 and "is a file, expected a directory of {lang}.txt or {lang}.jsonl files" in line, line
    assert str(corpus_dir / "aa.txt") in line and not out.exists()


# -- one CLI style ------------------------------------------------------------------------------------------
def _parsers(parser: argparse.ArgumentParser, name: str = "langneurons"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _parsers(child, f"{name} {sub}")


def test_every_help_text_shows_the_default():
    missing = []
    for name, parser in _parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            if action.default in (None, False, [], argparse.SUPPRESS) or isinstance(action, argparse._HelpAction):
                continue
            text = formatter._get_help_string(action).lower()
            if "(default" not in text and "default:" not in text:
                missing.append(f"{name} {action.option_strings[0]}")
    assert missing == []
    text = build_parser().format_help()
    assert "exit codes: 0 done, 2 user error" in text and "130 interrupted" in text


def test_list_options_take_spaces_commas_and_repeats():
    parser = build_parser()
    forms = [["--langs", "en", "zh"], ["--langs", "en,zh"], ["--langs", "en", "--langs", "zh"]]
    for form in forms:
        args = parser.parse_args(["perplexity", "--model", "m", "--corpus", "c", "--neurons", "n", "--out", "o", *form])
        assert args.langs == ["en", "zh"], form
    for command in ("generate", "steer"):
        args = parser.parse_args([command, "--model", "m", "--neurons", "n", "--stats", "s", "--out", "o",
                                  "--strength", "1", "5,10"])
        assert args.strength == [1.0, 5.0, 10.0]
    args = parser.parse_args(["generate", "--model", "m", "--out", "o", "--deactivate", "es,fr", "--activate", "zh"])
    assert args.deactivate == ["es", "fr"] and args.activate == ["zh"] and args.strength == [1.0]
    args = parser.parse_args(["analyze", "sweep", "--model", "m", "--stats", "s", "--language", "fr", "--corpus", "c",
                              "--out", "o", "--ratios", "0", "0.01,0.02"])
    assert args.ratios == [0.0, 0.01, 0.02]
    args = parser.parse_args(["identify", "--out", "o", "--finetuned", "en=a,b", "zh=c"])
    assert args.finetuned == ["en=a,b", "zh=c"]
    # every list option of every command is of one kind
    for name, sub in _parsers(parser):
        for action in sub._actions:
            if action.option_strings and action.option_strings[0] in ("--langs", "--strength", "--deactivate",
                                                                      "--activate", "--ratios", "--names"):
                assert action.nargs == "+", f"{name} {action.option_strings[0]}"


def test_exit_codes(tmp_path, capsys, monkeypatch):
    from langneurons.cli import report

    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "error" in capsys.readouterr().err

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "run", interrupted)
    code = main(["report", str(tmp_path)])
    assert code == 130 and capsys.readouterr().err.strip() == "langneurons report: interrupted"
    assert main([]) == 2
    readme = (ROOT / "README.md").read_text()
    assert "0 done, 2 user error" in readme and "130 interrupted" in readme


def test_the_exit_codes_are_the_processes_own(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, "-m", "langneurons", "report", str(tmp_path / "missing")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    result = subprocess.run([sys.executable, "-m", "langneurons", "--version"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0


def test_report_over_a_corrupt_artefact_says_so_and_still_writes(tmp_path, capsys):
    from test_data_safety import hand_stats

    run = tmp_path / "run"
    stats = hand_stats()
    stats.save(run / "stats")
    ln.identify(stats, "lape", top_rate=0.2).save(run / "lape.neurons")
    tensors = run / "lape.neurons" / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-4] + b"XXXX")  # the checksum no longer matches
    (run / "broken").mkdir()
    (run / "broken" / "meta.json").write_text("{not json")
    code, err = cli(capsys, "report", run)
    assert code == 0, err
    found = [line for line in err.splitlines() if line.startswith("langneurons report: warning: ")]
    assert len(found) == 2, err
    assert any("lape.neurons: could not render this neuron_set" in line and "checksum" in line for line in found)
    assert any("broken/meta.json cannot be read" in line for line in found)
    text = (run / "report.html").read_text(encoding="utf-8")
    assert "could not render this neuron_set" in text and "broken/meta.json cannot be read" in text


def test_a_language_missing_from_the_inputs_names_the_files(tmp_path, capsys):
    from test_data_safety import hand_stats

    stats = hand_stats()
    stats.save(tmp_path / "stats")
    ln.identify(stats, "lape", top_rate=0.2).save(tmp_path / "lape.neurons")
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "aa.txt").write_text("question\n")
    code, err = cli(capsys, "generate", "--model", "unused", "--prompts", prompts, "--neurons",
                    tmp_path / "lape.neurons", "--stats", tmp_path / "stats", "--activate", "zz", "--out", tmp_path / "gen")
    line = one_error(err)
    assert code == 2 and "'zz'" in line and str(tmp_path / "lape.neurons") in line, line
    code, err = cli(capsys, "steer", "--model", "unused", "--prompts", prompts, "--neurons", tmp_path / "lape.neurons",
                    "--stats", tmp_path / "stats", "--langs", "zz", "--out", tmp_path / "steer")
    assert code == 2 and f"no prompt file for language(s) zz in {str(prompts)!r}" in one_error(err)
    code, err = cli(capsys, "steer", "--model", "unused", "--unconditional", 2, "--neurons", tmp_path / "lape.neurons",
                    "--stats", tmp_path / "stats", "--langs", "zz", "--out", tmp_path / "steer")
    line = one_error(err)
    assert code == 2 and "cannot steer language(s) zz" in line and str(tmp_path / "stats") in line, line
    assert not (tmp_path / "gen").exists() and not (tmp_path / "steer").exists()
