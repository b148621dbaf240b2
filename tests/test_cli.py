"""The command line end to end, and one-line errors (exit 2, nothing written) for bad input."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

import langneurons as ln
from langneurons.cli.main import main


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def test_record_identify_perplexity_masks(llama_dir, corpus_dir, valid_dir, tmp_path, capsys):
    stats_dir, neurons_dir, ppl_dir = tmp_path / "stats", tmp_path / "lape.neurons", tmp_path / "ppl"
    assert run_cli("record", "--model", llama_dir, "--corpus", corpus_dir, "--out", stats_dir, "--seq-len", 16,
                   "--max-tokens", 128, "--batch-size", 4, "--no-progress") == 0
    stats = ln.load_stats(stats_dir)
    assert stats.languages == ["aa", "bb", "cc"] and stats.token_count.tolist() == [128, 128, 128]
    assert run_cli("identify", "--stats", stats_dir, "--method", "lape", "--top-rate", 0.1, "--out", neurons_dir) == 0
    assert ln.load_neurons(neurons_dir).parameters["top_rate"] == 0.1
    assert run_cli("perplexity", "--model", llama_dir, "--corpus", valid_dir, "--neurons", neurons_dir,
                   "--out", ppl_dir, "--seq-len", 16, "--max-tokens", 64, "--no-progress") == 0
    with open(ppl_dir / "perplexity.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["condition", "aa", "bb", "cc"]
    assert [r[0] for r in rows[1:]] == ["normal", "random", "aa", "bb", "cc"]
    assert (ppl_dir / "nll.csv").exists() and (ppl_dir / "perplexity_change.png").exists()
    assert run_cli("masks", "export", neurons_dir, "--out", tmp_path / "m.neuron.pth") == 0
    assert run_cli("masks", "import", tmp_path / "m.neuron.pth", "--langs", "aa,bb,cc", "--width", 64,
                   "--out", tmp_path / "back.neurons") == 0
    assert ln.load_neurons(tmp_path / "back.neurons").sizes() == ln.load_neurons(neurons_dir).sizes()
    shards = []
    for i in range(2):
        shards.append(tmp_path / f"shard{i}")
        assert run_cli("record", "--model", llama_dir, "--corpus", corpus_dir, "--out", shards[-1], "--seq-len", 16,
                       "--max-tokens", 128, "--shard", f"{i}/2", "--no-progress") == 0
    assert run_cli("merge", *shards, "--out", tmp_path / "merged") == 0
    assert ln.load_stats(tmp_path / "merged").positive_count.equal(stats.positive_count)


@pytest.fixture(scope="module")
def mamba_dir(tmp_path_factory, tokenizer_dir):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("mamba")
    config = AutoConfig.for_model("mamba", hidden_size=16, num_hidden_layers=1, vocab_size=300, state_size=4)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(out))
    return out


def bad_inputs(llama_dir, corpus_dir, tmp_path, mamba_dir):
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with_empty = tmp_path / "with_empty"
    with_empty.mkdir()
    (with_empty / "aa.txt").write_text("\n\n")
    bad_utf8 = tmp_path / "bad_utf8"
    bad_utf8.mkdir()
    (bad_utf8 / "aa.txt").write_bytes(b"ok\n\xff\xfe broken\n")
    record = ["record", "--model", llama_dir, "--seq-len", 16, "--no-progress"]
    other_neurons = tmp_path / "other.neurons"
    ln.NeuronSet({"aa": [[0]] * 3}, 3, 64).save(other_neurons)
    return {
        "model path": (["record", "--model", tmp_path / "no_model", "--corpus", corpus_dir], "does not exist"),
        "architecture": (["record", "--model", mamba_dir, "--corpus", corpus_dir, "--seq-len", 16],
                         "unsupported architecture: model type 'mamba'"),
        "no files": ([*record, "--corpus", empty_dir], "has no {lang}.txt"),
        "missing lang": ([*record, "--corpus", corpus_dir, "--langs", "aa,zz"], "no corpus file for language(s) zz"),
        "empty file": ([*record, "--corpus", with_empty], "aa.txt' is empty"),
        "undecodable": ([*record, "--corpus", bad_utf8], "not valid UTF-8"),
        "max tokens": ([*record, "--corpus", corpus_dir, "--max-tokens", 8], "smaller than one window"),
        "shape": (["perplexity", "--model", llama_dir, "--corpus", corpus_dir, "--neurons", other_neurons,
                   "--seq-len", 16, "--no-progress"], "neuron set is for 3 layers x 64 neurons"),
        "method": (["identify", "--stats", tmp_path, "--method", "nope"], "unknown method 'nope'"),
        "stats dir": (["identify", "--stats", tmp_path / "nothing"], "not a langneurons activation_stats"),
    }


@pytest.mark.parametrize("case", ["model path", "architecture", "no files", "missing lang", "empty file",
                                  "undecodable", "max tokens", "shape", "method", "stats dir"])
def test_bad_input_is_one_line_and_writes_nothing(case, llama_dir, corpus_dir, tmp_path, mamba_dir, capsys):
    args, message = bad_inputs(llama_dir, corpus_dir, tmp_path, mamba_dir)[case]
    out = tmp_path / "out"
    assert run_cli(*args, "--out", out) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # earlier lines can only be progress bars of loading
    assert message in last and last.startswith("langneurons "), err
    assert "Traceback" not in err and sum("error" in line for line in err.splitlines()) == 1
    assert not out.exists()
    assert not list(tmp_path.glob(".out.*"))


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "langneurons.cli.main", "identify", "--stats", "/nonexistent",
                             "--out", "/tmp/x"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("langneurons identify: error:")


def test_param_items_parse_json_values_and_reject_malformed():
    from langneurons.cli._common import parse_param_items

    assert parse_param_items(["top-rate=0.05", "seed=3", "name=abc"]) == {"top_rate": 0.05, "seed": 3, "name": "abc"}
    with pytest.raises(ln.LangNeuronsError, match="NAME=VALUE"):
        parse_param_items(["nonsense"])


def test_file_that_is_not_a_language_code_warns_on_one_line(llama_dir, corpus_dir, tmp_path, capsys):
    import shutil
    import warnings

    from langneurons.data.corpus import find_corpus_files
    from langneurons.errors import LangNeuronsWarning

    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    (corpus / "refs.txt").write_text("GEN 1:1\nGEN 1:2\nGEN 1:3\n" * 40)
    (corpus / "zh_hant.txt").write_text((corpus / "aa.txt").read_text())
    with pytest.warns(LangNeuronsWarning, match=r"corpus directory .*: refs\.txt is read as language refs, "
                                                r"which does not look like"):
        assert list(find_corpus_files(corpus)) == ["aa", "bb", "cc", "refs", "zh_hant"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # naming the languages is silent
        assert list(find_corpus_files(corpus, ["aa", "zh_hant"])) == ["aa", "zh_hant"]
    assert run_cli("record", "--model", llama_dir, "--corpus", corpus, "--out", tmp_path / "stats", "--seq-len", 16,
                   "--max-tokens", 32, "--no-progress") == 0
    err = capsys.readouterr().err
    warning_lines = [line for line in err.splitlines() if "warning" in line]
    assert warning_lines == [f"langneurons record: warning: corpus directory {str(corpus)!r}: refs.txt is read "
                             "as language refs, which does not look like a language code; choose the languages with --langs"]
    assert ln.load_stats(tmp_path / "stats").languages == ["aa", "bb", "cc", "refs", "zh_hant"]
