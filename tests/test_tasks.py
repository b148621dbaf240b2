"""Task scoring: option log-likelihoods against a hand computation, exact match on a model whose answer is
known, the numeric parser, the space rule, task files, the data folder's sets, interventions, the CLI."""

from __future__ import annotations

import csv
import json
import math
from decimal import Decimal

import pytest
import torch

import langneurons as ln
from langneurons.evaluation.tasks import (
    Task,
    TaskItem,
    answer_matches,
    encode_pair,
    evaluate_task,
    join_continuation,
    load_task,
    load_task_result,
    normalize_answer,
    parse_number,
    read_task_file,
    score_items,
    uses_spaces,
)
from langneurons.model.loading import LoadedModel
from langneurons.testbed.tiny import tiny_model

from conftest import SHARED_DATA


def loaded_of(model, tokenizer) -> LoadedModel:
    return LoadedModel(model, tokenizer, "tiny", dtype=next(model.parameters()).dtype)


def hand_logprob(model, tokenizer, prompt: str, separator: str, option: str) -> tuple[float, int]:
    """log p(option | prompt) from the full logits of the sequence run alone, unpadded."""
    context = tokenizer(prompt)["input_ids"]
    whole = tokenizer(prompt + separator + option)["input_ids"]
    assert whole[:len(context)] == context
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([whole])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[t - 1, whole[t]]) for t in range(len(context), len(whole))), len(whole) - len(context)


CHOICE_ITEMS = [
    TaskItem("1", "aa", "abc def ghij", ("abc", "ghij deb", "a"), 1),
    TaskItem("2", "aa", "jig fed", ("hid", "bad cab jig fed"), 0),
    TaskItem("1", "zh", "abc def", ("ab", "cdefgh", "j"), 2),  # written without spaces: no leading space
]


def test_choice_scores_equal_a_hand_computation(tokenizer):
    model = tiny_model("llama").double()
    task = Task("hand", "choice", list(CHOICE_ITEMS))
    scores = score_items(model, tokenizer, task, batch_size=2)  # padded batches of mixed items
    for item, score in zip(CHOICE_ITEMS, scores):
        separator = " " if item.language == "aa" else ""
        hand = [hand_logprob(model, tokenizer, item.prompt, separator, option) for option in item.options]
        for j, (value, count) in enumerate(hand):
            assert abs(score.details["logprob"][j] - value) < 1e-9
            assert score.details["tokens"][j] == count
        per_char = [value / len(option) for (value, _), option in zip(hand, item.options)]
        best = max(range(len(per_char)), key=per_char.__getitem__)
        assert score.prediction == item.options[best] and score.correct == (best == item.label)
        by_sum = max(range(len(hand)), key=lambda j: hand[j][0])
        assert score.details["correct_sum"] == (by_sum == item.label)
        by_token = max(range(len(hand)), key=lambda j: hand[j][0] / hand[j][1])
        assert score.details["correct_token"] == (by_token == item.label)


def test_leading_space_rule(tokenizer):
    assert uses_spaces("en") and uses_spaces("pt_BR") and not uses_spaces("zh") and not uses_spaces("ja")
    assert not uses_spaces("zh-hans") and not uses_spaces("th")
    assert join_continuation("The capital is", "Paris", True) == " Paris"
    assert join_continuation("The capital is ", "Paris", True) == "Paris"
    assert join_continuation("Answer:\n", "B", True) == "B"
    assert join_continuation("The capital is", " Paris", True) == " Paris"
    assert join_continuation("首都是", "巴黎", False) == "巴黎"
    # trailing spaces of the prompt move to the continuation (as lm-evaluation-harness does); a newline stays
    assert encode_pair(tokenizer, "abc def ", "gij") == encode_pair(tokenizer, "abc def", " gij")
    context, tail = encode_pair(tokenizer, "abc\n", "def")
    assert context == tokenizer("abc\n")["input_ids"]
    # the task decides per language, and an explicit setting overrides it
    task = Task("t", "choice", list(CHOICE_ITEMS))
    assert task.space_for("aa") and not task.space_for("zh")
    assert Task("t", "choice", [], space=False).space_for("aa") is False
    assert Task("t", "choice", [], space={"zh": True}).space_for("zh") is True


def test_numeric_parser_hand_made_strings():
    cases = {
        "The answer is 18.": Decimal(18),
        "She makes $1,234,567.89 a year": Decimal("1234567.89"),
        "3,5 kg": Decimal("3.5"),
        "from 3-5 apples, so 5": Decimal(5),
        "pages 3-5": Decimal(5),
        "it is −12 degrees": Decimal(-12),
        "-7": Decimal(-7),
        "答えは１８です": Decimal(18),
        "共 70,000 美元。": Decimal(70000),
        "1\u202f000 €": Decimal(1000),
        "12.5% of 40 is 5.0": Decimal(5),
        "0.25": Decimal("0.25"),
        "١٢ كتاب": Decimal(12),
    }
    for text, expected in cases.items():
        assert parse_number(text) == expected, text
    assert parse_number("no number here") is None
    assert parse_number("18.0") == parse_number("18")


def test_answer_normalisation_and_match_definition():
    assert normalize_answer("  «Paris»,\n ") == "paris"
    assert normalize_answer("ＰＡＲＩＳ") == "paris"
    assert normalize_answer("U.S.") == "u.s"
    assert answer_matches("Paris, the capital of France", "paris", "en")
    assert not answer_matches("Parisian food", "Paris", "en")
    assert answer_matches("巴黎是首都", "巴黎", "zh")  # no word boundary without spaces
    assert not answer_matches("Paris, the capital", "Paris", "en", match="exact")
    assert answer_matches("Paris.", "Paris", "en", match="exact")


def constant_model(token: int, vocab: int = 300):
    """A tiny llama whose next token is always ``token``: a zero output head with a one-hot bias."""
    model = tiny_model("llama", vocab_size=vocab).double()
    head = torch.nn.Linear(model.config.hidden_size, vocab, bias=True).double()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token] = 10.0
    model.set_output_embeddings(head)
    return model


def word_token(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (text, ids)
    return ids[0]


def spaced_word(tokenizer) -> tuple[int, str]:
    """A token of the tokenizer that decodes to a space and ASCII letters, and that word."""
    for token in range(len(tokenizer)):
        text = tokenizer.decode([token])
        if len(text) >= 2 and text[0] == " " and text[1:].isascii() and text[1:].isalpha():
            return token, text[1:]
    raise AssertionError("no such token")


def test_first_token_and_greedy_exact_match_with_a_known_answer(tokenizer):
    token, word = spaced_word(tokenizer)
    model = constant_model(token)
    items = [TaskItem("1", "aa", "cd ef", answers=(word,)),          # first token " word": right
             TaskItem("2", "aa", "cd ef", answers=("zzz",)),         # wrong
             TaskItem("3", "aa", "cd ef", answers=("zzy", word))]    # any answer counts
    first = score_items(model, tokenizer, Task("ft", "first_token", items), batch_size=2)
    assert [s.correct for s in first] == [True, False, True]
    assert first[1].prediction == " " + word and first[1].details["predicted_token"] == token
    greedy = score_items(model, tokenizer, Task("g", "greedy", items, max_new_tokens=3), batch_size=2)
    assert [s.prediction for s in greedy] == [f"{word} {word} {word}"] * 3
    assert [s.correct for s in greedy] == [True, False, True]  # prefix `word` then a word boundary
    exact = score_items(model, tokenizer, Task("g", "greedy", items, max_new_tokens=3, match="exact"))
    assert [s.correct for s in exact] == [False, False, False]
    letter = constant_model(word_token(tokenizer, "a"))  # says "aaa"
    prefix_only = [TaskItem("4", "aa", "cd", answers=("a",)), TaskItem("4", "zh", "cd", answers=("a",)),
                   TaskItem("5", "aa", "cd", answers=("aaa",))]
    partial = score_items(letter, tokenizer, Task("g", "greedy", prefix_only, max_new_tokens=3))
    assert [s.prediction for s in partial] == ["aaa"] * 3
    assert [s.correct for s in partial] == [False, True, True]  # "a" of "aaa": a word boundary is needed with spaces


def test_numeric_metric_on_a_known_output(tokenizer):
    model = constant_model(word_token(tokenizer, "7"))
    items = [TaskItem("1", "aa", "how many", answers=("77",)), TaskItem("2", "aa", "how many", answers=("7",))]
    scores = score_items(model, tokenizer, Task("n", "numeric", items, max_new_tokens=2))
    assert [s.prediction for s in scores] == ["77", "77"]
    assert [s.correct for s in scores] == [True, False]
    assert scores[0].details["parsed"] == "77"


def small_neurons(model) -> ln.NeuronSet:
    site_map = ln.locate_site(model)
    return ln.NeuronSet({"aa": [torch.arange(0, 40), torch.arange(10, 50)], "zh": [torch.arange(5), torch.arange(5)]},
                        site_map.num_layers, site_map.width, method="hand")


def test_task_under_deactivation_equals_the_forward_passes_in_the_same_context(tokenizer):
    model = tiny_model("llama").double()
    neurons = small_neurons(model)
    task = Task("hand", "choice", list(CHOICE_ITEMS))

    def edit(condition: str, lang: str, column: int):
        return ln.deactivate(model, neurons, condition.split(":")[1])

    result = evaluate_task(loaded_of(model, tokenizer), task, ["normal", "deactivate:aa"], edit, batch_size=2,
                           progress=False)
    assert result.conditions == ["normal", "deactivate:aa"] and result.languages == ["aa", "zh"]
    normal = {(s.language, s.id): s for s in result.items["normal"]}
    edited = {(s.language, s.id): s for s in result.items["deactivate:aa"]}
    with ln.deactivate(model, neurons, "aa"):
        for item in CHOICE_ITEMS:
            separator = " " if item.language == "aa" else ""
            hand = [hand_logprob(model, tokenizer, item.prompt, separator, o)[0] for o in item.options]
            got = edited[(item.language, item.id)].details["logprob"]
            assert all(abs(a - b) < 1e-9 for a, b in zip(got, hand))
            assert max(abs(a - b) for a, b in zip(got, normal[(item.language, item.id)].details["logprob"])) > 1e-6
    for r, condition in enumerate(result.conditions):
        for c, lang in enumerate(result.languages):
            mine = [s.correct for s in result.items[condition] if s.language == lang]
            assert result.accuracy[r, c] == sum(mine) / len(mine)
    # leaving the context restored the model: the normal row is reproduced
    again = evaluate_task(loaded_of(model, tokenizer), task, ["normal"], progress=False)
    before = [s.details["logprob"] for s in result.items["normal"]]
    assert [s.details["logprob"] for s in again.items["normal"]] == before


def test_batch_edit_sees_the_item_of_every_row(tokenizer):
    model = tiny_model("llama").double()
    seen: list[list[str]] = []

    class Record:
        def __init__(self, rows):
            seen.append([f"{item.language}:{item.id}" for item in rows])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    task = Task("hand", "choice", list(CHOICE_ITEMS))
    evaluate_task(loaded_of(model, tokenizer), task, ["normal", "x"], batch_size=2, progress=False,
                  batch_edit=lambda condition, rows: Record(rows))
    flat = sorted(key for batch in seen for key in batch)
    expected = sorted(f"{item.language}:{item.id}" for item in CHOICE_ITEMS for _ in item.options)
    assert flat == expected and all(len(batch) <= 2 for batch in seen)


def test_task_files_jsonl_and_tsv(tmp_path):
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"id": "a", "language": "en", "prompt": "Sky is", "options": ["blue", "green"], "answer": "blue"},
        {"id": "a", "lang": "fr", "question": "Le ciel est", "options": ["vert", "bleu"], "label": 1},
    ]) + "\n", encoding="utf-8")
    task = read_task_file(jsonl)
    assert task.metric == "choice" and task.languages == ["en", "fr"]
    assert task.items[0].label == 0 and task.items[1].label == 1 and task.items[1].prompt == "Le ciel est"
    tsv = tmp_path / "t.tsv"
    tsv.write_text("id\tlanguage\tprompt\tanswer\nq1\ten\tQ: 2+2?\\nA:\t4\nq1\tzh\t问：2+2？\\n答：\t4\n",
                   encoding="utf-8")
    numeric = read_task_file(tsv, metric="numeric")
    assert numeric.items[0].prompt == "Q: 2+2?\nA:" and numeric.items[1].answers == ("4",)
    assert read_task_file(tsv).metric == "greedy"
    options_tsv = tmp_path / "o.tsv"
    options_tsv.write_text("language\tprompt\toption_a\toption_b\toption_c\tlabel\nen\tSky is\tred\tblue\t\t1\n")
    item = read_task_file(options_tsv).items[0]
    assert item.options == ("red", "blue") and item.label == 1 and item.id == "2"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"language": "en", "prompt": "x", "options": ["a", "b"]}) + "\n")
    with pytest.raises(ln.LangNeuronsError, match="label"):
        read_task_file(bad)
    with pytest.raises(ln.LangNeuronsError, match="not a number"):
        read_task_file(_write(tmp_path / "n.tsv", "language\tprompt\tanswer\nen\tQ\tmany\n"), metric="numeric")
    with pytest.raises(ln.LangNeuronsError, match="no items in de"):
        load_task(jsonl, langs=["de"])


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_continuation_that_tokenizes_to_nothing_is_an_error(tokenizer):
    with pytest.raises(ln.LangNeuronsError, match="tokenizes to nothing"):
        encode_pair(tokenizer, "abc", "")


def test_result_save_and_load(tokenizer, tmp_path):
    model = tiny_model("llama")
    task = Task("hand", "choice", list(CHOICE_ITEMS))
    result = evaluate_task(loaded_of(model, tokenizer), task, progress=False)
    result.save(tmp_path / "out")
    with open(tmp_path / "out" / "accuracy.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["condition", "aa", "zh"] and rows[1][0] == "normal"
    assert math.isclose(float(rows[1][1]), float(result.accuracy[0, 0]), abs_tol=1e-6)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["kind"] == "task_accuracy" and meta["task_settings"]["normalization"] == "char"
    assert set(meta["accuracy_by_normalization"]) == {"sum", "token", "char"}
    back = load_task_result(tmp_path / "out")
    assert back.conditions == ["normal"] and len(back.items["normal"]) == 3
    assert back.items["normal"][0].details["logprob"] == result.items["normal"][0].details["logprob"]


@pytest.mark.skipif(not (SHARED_DATA / "bible" / "en.txt").exists(), reason="shared data not available")
def test_bible_cloze_is_aligned_and_rebuilds_the_verse():
    task = load_task("cloze", data=SHARED_DATA, langs=["en", "zh", "de"], limit=30)
    lines = {lang: (SHARED_DATA / "bible" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[-1000:]
             for lang in task.languages}
    for item in task.items:
        gold = item.options[item.label]
        verse = lines[item.language][int(item.id)]
        sep = " " if item.language != "zh" else ""
        assert verse.startswith(item.prompt + sep + gold) and len(item.options) == 4
        assert len(set(o.casefold() for o in item.options)) == 4
    positions = {(item.id, item.language): item.label for item in task.items}
    shared = [i for i in {item.id for item in task.items} if all((i, lang) in positions for lang in task.languages)]
    assert shared and all(len({positions[(i, lang)] for lang in task.languages}) == 1 for i in shared)
    first = load_task("cloze", data=SHARED_DATA, langs=["en"], limit=5, metric="first_token")
    assert first.metric == "first_token" and all(item.answers for item in first.items)


@pytest.mark.skipif(not (SHARED_DATA / "mgsm").is_dir(), reason="shared data not available")
def test_shared_sets_load():
    mgsm = load_task("mgsm", data=SHARED_DATA, langs=["en", "zh"], limit=3)
    assert mgsm.metric == "numeric" and mgsm.items[0].answers == ("18",) and "Janet" in mgsm.items[0].prompt
    xquad = load_task("xquad", data=SHARED_DATA, langs=["en"], limit=2)
    assert xquad.items[0].answers == ("308",) and xquad.items[0].prompt.endswith("\nAnswer:")
    facts = load_task("mpararel", data=SHARED_DATA, langs=["en", "zh"], limit=5, relations=["P36"])
    assert facts.metric == "first_token" and all("[X]" not in i.prompt and "[Y]" not in i.prompt for i in facts.items)
    assert all(item.id.startswith("P36:Q") for item in facts.items)


def test_missing_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ln.LangNeuronsError, match="not found"):
        load_task("mgsm", data=tmp_path)


def test_cli_task_writes_the_table(llama_dir, tmp_path):
    from langneurons.cli.main import main

    task_file = tmp_path / "task.jsonl"
    task_file.write_text("\n".join(json.dumps(dict(zip(("id", "language", "prompt", "options", "label"), row)))
                                   for row in [("1", "aa", "abc def", ["ghij", "ab"], 0),
                                               ("1", "bb", "абв где", ["жзи", "кааб"], 1)]) + "\n")
    model = ln.load_model(str(llama_dir))
    neurons_dir = tmp_path / "n.neurons"
    small_neurons(model.model).save(neurons_dir)
    out = tmp_path / "out"
    code = main(["task", "--model", str(llama_dir), "--task", str(task_file), "--neurons", str(neurons_dir),
                 "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0
    with open(out / "accuracy.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["condition", "aa", "bb"]
    assert [row[0] for row in rows[1:]] == ["normal", "random", "deactivate:aa", "deactivate:zh"]
    lines = (out / "items.jsonl").read_text().splitlines()
    assert len(lines) == 4 * 2
    meta = json.loads((out / "meta.json").read_text())
    assert meta["random"]["sizes"] == {"aa": 80, "zh": 10} and meta["task_settings"]["metric"] == "choice"
    assert main(["task", "--model", str(llama_dir), "--task", str(task_file), "--deactivate", "aa",
                 "--out", str(tmp_path / "o2")]) == 2


LM_EVAL_YAML = """task: ln_offline_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
"""


@pytest.mark.slow  # importing lm_eval and datasets: ~20 s
def test_lm_eval_bridge_runs_a_local_task_inside_an_intervention(tokenizer, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    from langneurons.evaluation.tasks.lmeval import run_lm_eval

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    items = [item for item in CHOICE_ITEMS if item.language == "aa"]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"question": i.prompt, "choices": list(i.options), "label": i.label})
                              for i in items) + "\n")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "ln_offline_mc.yaml").write_text(LM_EVAL_YAML.format(data=data))
    model = tiny_model("llama").double()
    neurons = small_neurons(model)
    loaded = loaded_of(model, tokenizer)
    results = run_lm_eval(loaded, ["ln_offline_mc"], ["normal", "deactivate:aa"],
                          edit=lambda c: ln.deactivate(model, neurons, c.split(":")[1]),
                          include_path=tmp_path / "tasks", log_samples=True)
    ours = evaluate_task(loaded, Task("mc", "choice", items, normalization="sum"), ["normal", "deactivate:aa"],
                         lambda c, lang, col: ln.deactivate(model, neurons, c.split(":")[1]), progress=False)
    for condition in ("normal", "deactivate:aa"):
        samples = sorted(results[condition]["samples"]["ln_offline_mc"], key=lambda s: s["doc_id"])
        for sample, score in zip(samples, ours.items[condition]):
            theirs = [float(r[0][0]) for r in sample["resps"]]  # lm-eval's log-likelihood of each option
            assert all(abs(a - b) < 1e-6 for a, b in zip(theirs, score.details["logprob"]))
        acc = results[condition]["results"]["ln_offline_mc"]["acc,none"]
        assert math.isclose(acc, float(ours.row(condition)[0]), abs_tol=1e-9)
    normal = [r[0][0] for s in results["normal"]["samples"]["ln_offline_mc"] for r in s["resps"]]
    edited = [r[0][0] for s in results["deactivate:aa"]["samples"]["ln_offline_mc"] for r in s["resps"]]
    assert max(abs(a - b) for a, b in zip(normal, edited)) > 1e-6
