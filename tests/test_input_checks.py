"""Inputs checked against each other before any model time is spent (issue 14): the model by the fingerprint of
its weights, the site, the context length; degenerate neuron sets reported. Each case: the one-line message,
the exit code, and nothing written or lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import langneurons as ln
from langneurons.errors import LangNeuronsError
from langneurons.sets import compatibility
from langneurons.sets.compatibility import compare_fingerprints, model_fingerprint
from test_data_safety import cli, one_error, snapshot


def save_model(directory: Path, tokenizer_dir: Path, seed: int = 0, **overrides) -> Path:
    from transformers import AutoTokenizer

    from langneurons.testbed.tiny import tiny_model

    tiny_model("llama", vocab_size=300, seed=seed, **overrides).save_pretrained(str(directory))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(directory))
    return directory


def warnings_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": warning: " in line]


@pytest.fixture(scope="module")
def run(tmp_path_factory, llama_dir, corpus_dir):
    """Statistics and a neuron set recorded on ``llama_dir`` (seed 0)."""
    root = tmp_path_factory.mktemp("inputs")
    stats = ln.record(str(llama_dir), corpus_dir, seq_len=16, max_tokens=256, progress=False)
    stats.save(root / "stats")
    ln.identify(stats, "lape", top_rate=0.1).save(root / "lape.neurons")
    return root


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory, tokenizer_dir) -> Path:
    """A model of the same shape as ``llama_dir`` with other weights (seed 1)."""
    return save_model(tmp_path_factory.mktemp("other-weights"), tokenizer_dir, seed=1)


@pytest.fixture(scope="module")
def other_shape(tmp_path_factory, tokenizer_dir) -> Path:
    """A model of another shape (3 layers)."""
    return save_model(tmp_path_factory.mktemp("other-shape"), tokenizer_dir, num_hidden_layers=3)


# -- the fingerprint --------------------------------------------------------------------------------------
def test_fingerprint_tells_weights_and_shapes_apart_and_ignores_the_dtype():
    from langneurons.testbed.tiny import tiny_model

    base = tiny_model("llama", seed=0)
    same = model_fingerprint(tiny_model("llama", seed=0))
    assert compare_fingerprints(model_fingerprint(base), same) == "same"
    assert compare_fingerprints(model_fingerprint(tiny_model("llama", seed=1)), same) == "weights"
    assert compare_fingerprints(model_fingerprint(tiny_model("llama", num_hidden_layers=3)), same) == "structure"
    # one fine-tuning step's worth of change in one sampled matrix is other weights
    name = next(iter(same["samples"]))
    with torch.no_grad():
        dict(base.named_parameters())[name].mul_(1 + 1e-4)
    assert compare_fingerprints(model_fingerprint(base), same) == "weights"
    # the same weights in bfloat16 / float16 are the same model
    for dtype in (torch.bfloat16, torch.float16):
        assert compare_fingerprints(model_fingerprint(tiny_model("llama", seed=0).to(dtype)), same) == "same"
    assert compare_fingerprints(None, same) is None
    assert json.loads(json.dumps(same)) == same  # strict JSON in meta.json


def test_a_parameter_set_fingerprint_samples_its_matrices_by_name():
    """PV reads weights one matrix at a time: its fingerprint samples the considered matrices, and a loaded model is
    sampled at the same names."""
    from langneurons.sets.compatibility import fingerprint_for, weights_fingerprint
    from langneurons.testbed.tiny import tiny_model

    base = dict(tiny_model("llama", seed=0).named_parameters())
    shapes = {name: tuple(p.shape) for name, p in base.items() if p.ndim == 2 and ".layers." in name}
    record = weights_fingerprint(shapes, lambda name: base[name].detach())
    assert len(record["samples"]) == 12 and record["structure"] is None
    for model, expected in ((tiny_model("llama", seed=0), "same"), (tiny_model("llama", seed=1), "weights"),
                            (tiny_model("llama", intermediate_size=96), "structure"),
                            (tiny_model("gpt2"), "structure")):
        assert compare_fingerprints(record, fingerprint_for(record, model)) == expected


def test_every_artefact_carries_the_fingerprint(run, llama_dir):
    from transformers import AutoModelForCausalLM

    expected = model_fingerprint(AutoModelForCausalLM.from_pretrained(str(llama_dir)))
    stats_meta = json.loads((run / "stats" / "meta.json").read_text())
    neuron_meta = json.loads((run / "lape.neurons" / "meta.json").read_text())
    assert compare_fingerprints(stats_meta["model_fingerprint"], expected) == "same"
    assert compare_fingerprints(neuron_meta["source"]["model_fingerprint"], expected) == "same"


# -- another model of the same shape, of another shape ----------------------------------------------------
def test_perplexity_on_a_same_shape_other_model_is_reported(run, other_weights, valid_dir, tmp_path, capsys):
    out = tmp_path / "ppl"
    code, err = cli(capsys, "perplexity", "--model", other_weights, "--corpus", valid_dir, "--neurons",
                    run / "lape.neurons", "--seq-len", 16, "--max-tokens", 32, "--out", out, "--no-progress")
    assert code == 0, err
    found = [line for line in warnings_of(err) if "weights differ" in line]
    assert len(found) == 1, err
    assert str(run / "lape.neurons") in found[0] and str(other_weights) in found[0]
    assert (out / "perplexity.csv").is_file()


def test_generate_with_stats_and_neurons_of_another_model_names_both(run, other_weights, tmp_path, capsys):
    """Statistics of one model and a neuron set of another (same shape): one warning naming both files."""
    other_stats = tmp_path / "other.stats"
    ln.record(str(other_weights), _corpus(tmp_path), seq_len=16, max_tokens=128, progress=False).save(other_stats)
    prompts = _prompts(tmp_path)
    out = tmp_path / "gen"
    code, err = cli(capsys, "generate", "--model", other_weights, "--prompts", prompts, "--neurons",
                    run / "lape.neurons", "--stats", other_stats, "--activate", "aa", "--max-new-tokens", 2,
                    "--langid", "py3langid", "--out", out, "--no-progress")
    assert code == 0, err
    pair = [line for line in warnings_of(err) if "different models of the same shape" in line]
    assert len(pair) == 1 and str(run / "lape.neurons") in pair[0] and str(other_stats) in pair[0], err
    assert any("weights differ" in line and str(run / "lape.neurons") in line for line in warnings_of(err)), err


def test_another_shape_fails_before_any_generation(run, other_shape, tmp_path, capsys, monkeypatch):
    """Steering on a model of another shape: exit 2 with one line naming the set and the model, before the normal
    condition is generated; nothing written."""
    from langneurons.evaluation import steering

    calls = []
    monkeypatch.setattr(steering, "generate_texts", lambda *a, **k: calls.append(1) or [])
    out = tmp_path / "steer"
    before = snapshot(run)
    code, err = cli(capsys, "steer", "--model", other_shape, "--prompts", _prompts(tmp_path), "--neurons",
                    run / "lape.neurons", "--stats", run / "stats", "--max-new-tokens", 2, "--langid", "py3langid",
                    "--out", out, "--no-progress")
    line = one_error(err)
    assert code == 2 and "another architecture or shape" in line, line
    assert str(run / "lape.neurons") in line or str(run / "stats") in line
    assert str(other_shape) in line
    assert calls == [] and not out.exists() and snapshot(run) == before


def test_library_steering_checks_the_shape_before_the_normal_outputs(run, other_shape, monkeypatch):
    from langneurons.evaluation import steering

    calls = []
    monkeypatch.setattr(steering, "generate_texts", lambda *a, **k: calls.append(1) or [])
    with pytest.raises(LangNeuronsError, match="neuron set is for 2 layers"):
        steering.language_accuracy(str(other_shape), ln.load_neurons(run / "lape.neurons"), ln.load_stats(run / "stats"),
                                   prompts={"aa": ["abc"]}, identifier="py3langid")
    assert calls == []


def test_artefacts_without_a_fingerprint_give_a_warning_not_an_error(run, llama_dir, valid_dir, tmp_path, capsys):
    old = tmp_path / "old.neurons"
    neurons = ln.load_neurons(run / "lape.neurons")
    neurons.source.pop("model_fingerprint")
    neurons.save(old)
    code, err = cli(capsys, "perplexity", "--model", llama_dir, "--corpus", valid_dir, "--neurons", old,
                    "--seq-len", 16, "--max-tokens", 32, "--out", tmp_path / "ppl", "--no-progress")
    assert code == 0, err
    found = [line for line in warnings_of(err) if "no model fingerprint" in line]
    assert len(found) == 1 and str(old) in found[0], err


def test_the_same_model_gives_no_warning(run, llama_dir, valid_dir, tmp_path, capsys):
    code, err = cli(capsys, "perplexity", "--model", llama_dir, "--corpus", valid_dir, "--neurons",
                    run / "lape.neurons", "--seq-len", 16, "--max-tokens", 32, "--out", tmp_path / "ppl",
                    "--no-progress")
    assert code == 0 and warnings_of(err) == [], err


def test_neurons_and_stats_of_different_sites_are_refused(run, tmp_path, capsys):
    other_site = tmp_path / "down.stats"
    stats = ln.load_stats(run / "stats")
    stats.meta["site"] = "ffn.down_in"
    stats.save(other_site)
    code, err = cli(capsys, "generate", "--model", "unused-model", "--prompts", _prompts(tmp_path), "--neurons",
                    run / "lape.neurons", "--stats", other_site, "--activate", "aa", "--out", tmp_path / "gen")
    line = one_error(err)
    assert code == 2 and "site ffn.act" in line and "ffn.down_in" in line and str(other_site) in line, line
    assert not (tmp_path / "gen").exists()


# -- the context length -------------------------------------------------------------------------------------
def test_seq_len_over_the_context_is_one_line_before_anything_runs(tmp_path, tokenizer_dir, corpus_dir, run,
                                                                  capsys, monkeypatch):
    short = save_model(tmp_path / "short", tokenizer_dir, max_position_embeddings=32)
    from langneurons.model import loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    for command in (["record", "--corpus", corpus_dir],
                    ["perplexity", "--corpus", corpus_dir, "--neurons", run / "lape.neurons"]):
        out = tmp_path / command[0]
        code, err = cli(capsys, *command, "--model", short, "--seq-len", 64, "--out", out)
        line = one_error(err)
        assert code == 2 and "--seq-len 64 is longer than the context" in line and "32 positions" in line, line
        assert str(short) in line and not out.exists()


def test_seq_len_over_the_context_in_python(tmp_path, tokenizer_dir, corpus_dir):
    short = save_model(tmp_path / "short", tokenizer_dir, max_position_embeddings=32)
    with pytest.raises(LangNeuronsError, match="longer than the context"):
        ln.record(str(short), corpus_dir, seq_len=64, progress=False)
    neurons = ln.NeuronSet({"aa": [torch.tensor([0]), torch.tensor([1])]}, 2, 64)
    with pytest.raises(LangNeuronsError, match="longer than the context"):
        ln.perplexity_matrix(str(short), corpus_dir, neurons, seq_len=64, progress=False)
    assert compatibility.context_length(ln.load_model(str(short)).model) == (32, "max_position_embeddings")


# -- degenerate neuron sets ---------------------------------------------------------------------------------
def skewed_stats(width: int = 50) -> ln.ActivationStats:
    """Three languages, 2 x 50 neurons: 30 neurons specific to aa (probabilities 0.9 / 0.05 / 0.05), 10 shared by
    bb and cc with a higher entropy (0.1 / 0.8 / 0.3), the rest 0.2 everywhere; a small rate leaves bb, cc empty."""
    k, layers = 3, 2
    probability = torch.full((k, layers * width), 0.2, dtype=torch.float64)
    probability[:, :30] = torch.tensor([[0.9], [0.05], [0.05]])
    probability[:, 30:40] = torch.tensor([[0.1], [0.8], [0.3]])
    positive = (probability * 100).round().long().view(k, layers, width)
    sums = positive.double()
    return ln.ActivationStats(["aa", "bb", "cc"], positive, sums, sums ** 2, torch.full((k,), 100, dtype=torch.long),
                              meta={"site": "ffn.act", "model": "hand"})


def test_identify_warns_about_empty_languages_with_the_rate_that_fills_them(tmp_path, capsys):
    stats_dir = tmp_path / "stats"
    skewed_stats().save(stats_dir)
    out = tmp_path / "lape.neurons"
    code, err = cli(capsys, "identify", "--stats", stats_dir, "--top-rate", 0.05, "--filter-rate", 0.5,
                    "--activation-bar-ratio", 0.8, "--out", out)
    assert code == 0, err
    found = warnings_of(err)
    assert len(found) == 1, err
    line = found[0]
    sizes = ln.load_neurons(out).sizes()
    empty = [lang for lang, n in sizes.items() if n == 0]
    assert empty == ["bb", "cc"] and sizes["aa"] == 5, sizes
    assert "no neurons for bb, cc" in line and "top_rate 0.05" in line, line
    # every rate named gives its language neurons, and half of it does not (brute force: refit at each rate)
    stats = ln.load_stats(stats_dir)
    rates = dict(part.split() for part in line.split("gives each one: ")[1].split(" (")[0].split("; ")[0]
                 .split(", "))
    assert set(rates) == set(empty)
    params = {"filter_rate": 0.5, "activation_bar_ratio": 0.8}
    for lang, rate in rates.items():
        assert float(rate) == 0.31  # the 31st neuron in entropy order is the first one bb and cc share
        assert ln.identify(stats, "lape", top_rate=float(rate), **params).size(lang) > 0
        assert ln.identify(stats, "lape", top_rate=float(rate) / 2, **params).size(lang) == 0
    assert ln.load_neurons(out).size("aa") == 5  # the set was still written


def test_smallest_rates_by_refitting_for_other_methods():
    from langneurons.methods import get_method
    from langneurons.methods.base import smallest_rates

    stats = skewed_stats()
    lap = get_method("lap", top_rate=0.01, activation_threshold=0.6).fit(stats)
    empty = [lang for lang, n in lap.select().sizes().items() if n == 0]
    rates = smallest_rates(lap, stats, empty)
    for lang, rate in rates.items():
        if rate is not None:
            assert get_method("lap", top_rate=rate, activation_threshold=0.6).fit(stats).select().size(lang) > 0


def test_commands_using_a_set_name_its_empty_languages(tmp_path, capsys):
    neurons = ln.NeuronSet({"aa": [torch.tensor([0, 1]), torch.tensor([2])], "bb": [torch.tensor([], dtype=torch.long),
                            torch.tensor([], dtype=torch.long)]}, 2, 8, method="lape")
    neurons.save(tmp_path / "set.neurons")
    for command in (["analyze", "layers"], ["analyze", "overlap"]):
        out = tmp_path / "-".join(command)
        code, err = cli(capsys, *command, "--neurons", tmp_path / "set.neurons", "--out", out)
        assert code == 0, err
        found = warnings_of(err)
        assert len(found) == 1 and "no neurons for bb" in found[0] and str(tmp_path / "set.neurons") in found[0]


def _corpus(tmp_path: Path) -> Path:
    from conftest import write_corpus

    return write_corpus(tmp_path / "corpus", 30, seed=5)


def _prompts(tmp_path: Path) -> Path:
    prompts = tmp_path / "prompts"
    prompts.mkdir(exist_ok=True)
    (prompts / "aa.txt").write_text("abc def\nghi\n")
    (prompts / "bb.txt").write_text("абв где\n")
    return prompts
