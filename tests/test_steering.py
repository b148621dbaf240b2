"""Language accuracy (Table 4): the table against a recount of its records, the three prompt modes, the
``steer`` command and its errors; language identification backends, code mapping and held-out accuracy."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch

import langneurons as ln
from langneurons.cli.main import main
from langneurons.evaluation.generation import Condition, GenerationSettings, generate_texts
from langneurons.evaluation.langid import (
    LanguageIdentifier,
    compare_identifiers,
    get_identifier,
    held_out_sample,
    normalize_code,
)
from langneurons.model.sites import locate_site
from langneurons.evaluation.steering import language_accuracy, load_language_accuracy
from langneurons.testbed.tiny import tiny_model

BIBLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bible"
QUESTIONS = {"aa": ["abc def", "ghij abc", "hij"], "bb": ["абв где", "жзи"], "cc": ["αβγ δεζ"]}


def stub_identifier() -> LanguageIdentifier:
    """Deterministic stand-in: the language is picked by the output's length."""
    return LanguageIdentifier("stub", "0", lambda text: ["aa", "bb", "cc"][len(text) % 3])


@pytest.fixture(scope="module")
def setup(tokenizer, corpus_dir):
    model = tiny_model("llama", vocab_size=300)
    stats = ln.record(model, corpus_dir, seq_len=32, max_tokens=256, tokenizer=tokenizer, progress=False)
    site_map = locate_site(model)
    sets = {lang: [torch.arange(s, s + 12), torch.arange(s, s + 12)] for lang, s in (("aa", 0), ("bb", 20), ("cc", 40))}
    neurons = ln.NeuronSet(sets, site_map.num_layers, site_map.width, method="hand")
    loaded = ln.model.loading.as_loaded(model, tokenizer)
    return loaded, neurons, stats


def settings(**kwargs):
    return GenerationSettings(**{"max_new_tokens": 8, "batch_size": 2, **kwargs})


def recount(result, lang, condition, language=None):
    subset = [r for r in result.records if r.condition == condition and (language is None or r.language == language)]
    return sum(r.detected_language == lang for r in subset) / len(subset), subset


def test_own_language_prompts_table_matches_its_records(setup, tmp_path):
    loaded, neurons, stats = setup
    result = language_accuracy(loaded, neurons, stats, prompts=QUESTIONS, strength=3.0, settings=settings(),
                               identifier=stub_identifier(), progress=False)
    assert result.languages == ["aa", "bb", "cc"] and result.columns == ("normal", "steered")
    assert len(result.records) == 2 * sum(len(q) for q in QUESTIONS.values())
    for row, lang in enumerate(result.languages):
        normal, subset = recount(result, lang, "normal", lang)
        steered, steered_subset = recount(result, lang, f"activate:{lang}@3", lang)
        assert len(subset) == len(steered_subset) == len(QUESTIONS[lang])
        assert result.accuracy[row].tolist() == [normal, steered]
        assert result.counts[lang]["steered_in_language"] == round(steered * len(QUESTIONS[lang]))
    # the steered outputs are those of the activate context manager
    direct = generate_texts(loaded, QUESTIONS["bb"], settings(),
                            Condition(activate=["bb"], strength=3.0).edits(neurons, stats))
    assert direct == [r.output for r in result.records if r.condition == "activate:bb@3"]
    assert result.meta["language_identifier"] == {"name": "stub", "distribution": None, "version": "0"}
    result.save(tmp_path / "acc")
    with open(tmp_path / "acc" / "language_accuracy.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["language", "normal", "steered"] and [r[0] for r in rows[1:]] == ["aa", "bb", "cc"]
    assert (tmp_path / "acc" / "language_accuracy.png").stat().st_size > 1000
    back = load_language_accuracy(tmp_path / "acc")
    torch.testing.assert_close(back.accuracy, result.accuracy, atol=1e-4, rtol=0)
    assert len(back.records) == len(result.records) and back.records[0].output == result.records[0].output


def test_unconditional_mode_shares_the_normal_samples(setup):
    loaded, neurons, stats = setup
    result = language_accuracy(loaded, neurons, stats, unconditional=4, strength=2.0,
                               settings=settings(sample=True, seed=1), identifier=stub_identifier(), progress=False)
    normal = [r for r in result.records if r.condition == "normal"]
    assert len(normal) == 4 and all(r.language is None and r.prompt == "" for r in normal)
    for row, lang in enumerate(result.languages):
        share, _ = recount(result, lang, "normal")
        steered, subset = recount(result, lang, f"activate:{lang}@2")
        assert len(subset) == 4
        assert result.accuracy[row].tolist() == [share, steered]
    with pytest.raises(ln.LangNeuronsError, match="--sample"):
        language_accuracy(loaded, neurons, stats, unconditional=2, settings=settings(), progress=False)


def test_several_strengths_give_one_column_each(setup, tmp_path):
    loaded, neurons, stats = setup
    result = language_accuracy(loaded, neurons, stats, prompts={"aa": QUESTIONS["aa"]}, strength=[1, 4],
                               settings=settings(), identifier=stub_identifier(), progress=False)
    assert result.columns == ("normal", "steered@1", "steered@4")
    assert [r.condition for r in result.records] == ["normal"] * 3 + ["activate:aa"] * 3 + ["activate:aa@4"] * 3
    for column, condition in ((1, "activate:aa"), (2, "activate:aa@4")):
        assert result.accuracy[0, column].item() == recount(result, "aa", condition)[0]
    assert "steered@4 > normal for" in result.format()
    result.save(tmp_path / "two")
    assert load_language_accuracy(tmp_path / "two").columns == result.columns


def test_cross_lingual_prompts_deactivate_the_prompt_language(setup):
    loaded, neurons, stats = setup
    result = language_accuracy(loaded, neurons, stats, prompts=QUESTIONS, prompt_language="aa",
                               deactivate_prompt_language=True, settings=settings(), langs=["bb", "cc"],
                               identifier=stub_identifier(), progress=False)
    assert result.languages == ["bb", "cc"]
    assert {r.condition for r in result.records} == {"normal", "deactivate:aa+activate:bb", "deactivate:aa+activate:cc"}
    assert all(r.language == "aa" for r in result.records)
    assert result.meta["mode"] == "prompts in aa"
    with pytest.raises(ln.LangNeuronsError, match="cannot steer language"):
        language_accuracy(loaded, neurons, stats, prompts={"aa": ["x"]}, langs=["bb"], progress=False)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, llama_dir, corpus_dir, setup):
    _, neurons, _ = setup
    root = tmp_path_factory.mktemp("steer")
    ln.record(str(llama_dir), corpus_dir, seq_len=32, max_tokens=256, progress=False).save(root / "stats")
    neurons.save(root / "neurons")
    (root / "prompts").mkdir()
    for lang, questions in QUESTIONS.items():
        (root / "prompts" / f"{lang}.txt").write_text("\n".join(questions) + "\n")
    return root


def test_steer_command(saved, llama_dir, tmp_path, capsys):
    out = tmp_path / "steer"
    code = main(["steer", "--model", str(llama_dir), "--prompts", str(saved / "prompts"), "--neurons",
                 str(saved / "neurons"), "--stats", str(saved / "stats"), "--out", str(out), "--max-new-tokens", "5",
                 "--langs", "aa,bb", "--strength", "2", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "steered > normal for" in captured.out
    with open(out / "language_accuracy.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["language", "normal", "steered"] and [r[0] for r in rows[1:]] == ["aa", "bb"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "language_accuracy" and meta["strength"] == 2.0
    assert meta["language_identifier"]["name"] == "langdetect" and meta["language_identifier"]["version"]
    records = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 2 * (3 + 2)
    for row in rows[1:]:  # the table is the share of records detected as the row's language
        lang = row[0]
        steered = [r for r in records if r["condition"] == f"activate:{lang}@2"]
        assert float(row[2]) == pytest.approx(sum(r["detected_language"] == lang for r in steered) / len(steered))


@pytest.mark.parametrize("extra, message", [
    (["--langs", "aa,zz"], "no prompt file for language(s) zz"),
    (["--deactivate-prompt-language"], "needs --prompt-language"),
    (["--prompt-language", "zz"], "no prompt file for language(s) zz"),
    (["--unconditional", "3"], "give either --prompts"),
])
def test_steer_command_errors(extra, message, saved, llama_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["steer", "--model", str(llama_dir), "--neurons", str(saved / "neurons"), "--stats", str(saved / "stats"),
            "--out", str(out), "--no-progress", "--prompts", str(saved / "prompts"), *extra]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# -- language identification -------------------------------------------------------------------------

SENTENCES = {
    "en": "The weather is lovely today and we are going for a long walk in the park.",
    "zh": "今天天气很好，我们打算去公园散步，然后一起吃午饭。",
    "fr": "Il fait très beau aujourd'hui et nous allons faire une longue promenade dans le parc.",
    "es": "Hoy hace muy buen tiempo y vamos a dar un largo paseo por el parque.",
    "ja": "今日はとても良い天気なので、公園を長く散歩するつもりです。",
    "ru": "Сегодня прекрасная погода, и мы собираемся долго гулять в парке.",
}


def test_code_mapping():
    assert normalize_code("zh-cn") == "zh" and normalize_code("zh-CN") == "zh" and normalize_code("ZH") == "zh"
    assert normalize_code("zh-tw") == "zh-tw" and normalize_code("EN") == "en" and normalize_code(None) is None
    with pytest.raises(ln.LangNeuronsError, match="unknown language identifier"):
        get_identifier("nosuch")


@pytest.mark.parametrize("name", ["langdetect", "py3langid"])
def test_backends_detect_real_sentences(name):
    if name == "py3langid":
        pytest.importorskip("py3langid")  # optional; langdetect is a required dependency
    identifier = get_identifier(name)
    assert identifier.version not in ("", "unknown")
    assert {lang: identifier.detect(text) for lang, text in SENTENCES.items()} == {lang: lang for lang in SENTENCES}
    assert identifier.detect("") is None and identifier.detect("12 345 !!") is None
    assert identifier.detect(SENTENCES["fr"]) == identifier.detect(SENTENCES["fr"])  # deterministic


@pytest.mark.skipif(not os.environ.get("LANGNEURONS_TEST_LINGUA"),
                    reason="lingua loads its models for ~20 s and 1.5 GB; set LANGNEURONS_TEST_LINGUA=1")
def test_lingua_detects_real_sentences():
    pytest.importorskip("lingua")
    identifier = get_identifier("lingua")
    assert {lang: identifier.detect(text) for lang, text in SENTENCES.items()} == {lang: lang for lang in SENTENCES}


@pytest.mark.skipif(not BIBLE.is_dir(), reason="../shared/data/bible is not available")
def test_default_identifier_on_held_out_bible_verses():
    langs = ["en", "zh", "fr", "es", "vi", "id", "ja", "de", "ru", "ar"]
    sample = held_out_sample(BIBLE, langs, per_language=30)
    assert all(len(texts) == 30 for texts in sample.values())
    (score,) = compare_identifiers(sample, ["langdetect"])
    assert score.mean_accuracy >= 0.95, score.accuracy
    assert min(score.accuracy.values()) >= 0.8, score.accuracy
    # the accuracy is the share of exact matches, recounted by hand
    identifier = get_identifier("langdetect")
    assert score.accuracy["ja"] == sum(identifier.detect(t) == "ja" for t in sample["ja"]) / 30
