"""Progress a person can plan with (issue 14): one line saying how much work is ahead, then one overall bar with a
total and the time left, from one helper (langneurons.progress) in every long command."""

from __future__ import annotations

import re

import torch

import langneurons as ln
from langneurons.progress import Progress, corpus_factors, human, progress_bar, work_line


def test_work_line_and_human_numbers():
    assert human(4_915_200) == "4.9M" and human(512) == "512" and human(40_960) == "41.0k"
    factors = corpus_factors(12, "conditions", {lang: 40_960 for lang in "abcdefghij"})
    line = work_line("perplexity", factors, 12 * 10 * 40_960, "tokens")
    assert line == "perplexity: 12 conditions x 10 languages x 40,960 tokens = 4.9M tokens"
    uneven = corpus_factors(3, "conditions", {"aa": 10, "bb": 30})
    assert work_line("perplexity", uneven, 120, "tokens") == "perplexity: 3 conditions x 40 tokens in 2 languages = 120 tokens"


def test_a_running_bar_is_reused_not_doubled(capsys):
    with progress_bar("steer", 10, "gen", [(5, "prompts"), (2, "conditions")]) as outer:
        with progress_bar("generate", 5, "gen", [(5, "prompts"), (1, "conditions")], outer) as inner:
            assert inner is outer
            inner.update(5)
        outer.update(5)
        assert outer.done == 10
    err = capsys.readouterr().err
    assert err.count("steer: 5 prompts x 2 conditions = 10 outputs") == 1 and "generate:" not in err
    with progress_bar("quiet", 3, progress=False) as bar:
        bar.update(3)  # disabled: counts, shows nothing
    assert bar.done == 3 and capsys.readouterr().err == ""
    estimated = Progress("x", 100, enabled=False)
    estimated.update(40)
    estimated.finish()
    assert estimated.total == 40


def test_perplexity_announces_and_counts_every_token(llama_dir, valid_dir, capsys):
    neurons = ln.NeuronSet({"aa": [torch.tensor([0]), torch.tensor([1])], "bb": [torch.tensor([2]), torch.tensor([3])]},
                           2, 64)
    matrix = ln.perplexity_matrix(str(llama_dir), valid_dir, neurons, seq_len=16, max_tokens=32, progress=True)
    err = capsys.readouterr().err.replace("\r", "\n")
    conditions, languages = len(matrix.conditions), len(matrix.languages)
    assert f"perplexity: {conditions} conditions x {languages} languages x 32 tokens = " in err, err
    final = [line for line in err.splitlines() if line.startswith("perplexity") and "100%" in line]
    assert final and f"{conditions * languages * 32}/{conditions * languages * 32}" in final[-1], err


def test_steering_shows_one_bar_over_every_condition(llama_dir, capsys):
    from langneurons.evaluation.generation import GenerationSettings

    stats = ln.record(str(llama_dir), _corpus(llama_dir), seq_len=16, max_tokens=64, progress=False)
    neurons = ln.identify(stats, "lape", top_rate=0.2)
    prompts = {"aa": ["abc", "def"], "bb": ["абв"]}
    ln.language_accuracy(str(llama_dir), neurons, stats, prompts=prompts, strength=[1.0, 5.0],
                         settings=GenerationSettings(max_new_tokens=2), identifier="py3langid", progress=True)
    err = capsys.readouterr().err.replace("\r", "\n")
    lines = [line for line in err.splitlines() if line.strip()]
    assert sum(bool(re.match(r"steer: \d", line)) for line in lines) == 1, lines
    assert "steer: 3 prompts in 2 languages x 3 conditions (normal + steered) = 9 outputs" in err, err
    assert not any(line.startswith("generate") for line in lines), lines  # no second bar
    assert re.search(r"steer.*100%.*9/9", err), err


def _corpus(llama_dir):
    from conftest import write_corpus

    return write_corpus(llama_dir.parent / "progress-corpus", 30, seed=7)
