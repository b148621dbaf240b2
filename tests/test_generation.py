"""Generation under interventions: batched left-padded greedy equals one-by-one, a steered generation differs
and leaving the context restores it exactly, activate-to-mean holds the recorded mean at every step (KV cache),
stop strings, seeded sampling, unconditional prompts, and the ``generate`` command's output and errors."""

from __future__ import annotations

import json

import pytest
import torch

import langneurons as ln
from langneurons.cli.main import main
from langneurons.evaluation.generation import (
    Condition,
    GenerationSettings,
    _repetition_penalty,
    _stopping_criteria,
    cut_at_stop,
    encode_prompts,
    generate_batch,
    generate_texts,
    generate_unconditional,
    left_padded,
    read_prompts,
)
from langneurons.model.sites import locate_site, site_hooks
from langneurons.testbed.tiny import tiny_model

PROMPTS = ["abc def", "абв где жзи ик", "αβ", "ghij abcd efg hij abc"]


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", vocab_size=300)


@pytest.fixture(scope="module")
def stats(llama, corpus_dir, tokenizer):
    return ln.record(llama, corpus_dir, seq_len=32, max_tokens=256, tokenizer=tokenizer, progress=False)


@pytest.fixture(scope="module")
def neurons(llama):
    site_map = locate_site(llama)
    sets = {lang: [torch.arange(start, start + 12), torch.arange(start + 1, start + 13)]
            for lang, start in (("aa", 0), ("bb", 20), ("cc", 40))}
    return ln.NeuronSet(sets, site_map.num_layers, site_map.width, method="hand")


def settings(**kwargs):
    return GenerationSettings(**{"max_new_tokens": 12, "batch_size": 4, "stop": (), **kwargs})


def test_left_padding_layout():
    ids, mask = left_padded([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_repetition_penalty_matches_transformers_and_ignores_left_padding():
    from transformers import RepetitionPenaltyLogitsProcessor

    scores = torch.randn(2, 10, generator=torch.Generator().manual_seed(0))
    rows = [[4, 5, 4], [7]]
    ids, mask = left_padded(rows, pad_id=2)
    generated = torch.tensor([[9], [3]])
    ids = torch.cat([ids, generated], dim=1)
    mask_processor = _repetition_penalty(1.1, mask)
    ours = mask_processor(ids, scores.clone())
    for b, row in enumerate(rows):  # each row as transformers penalizes it alone, without padding
        alone = torch.tensor([row + generated[b].tolist()])
        expected = RepetitionPenaltyLogitsProcessor(1.1)(alone, scores[b : b + 1].clone())
        torch.testing.assert_close(ours[b : b + 1], expected, rtol=0, atol=1e-6)
    assert ours[1, 2] == scores[1, 2]  # the pad id is not penalized in the padded row


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_batched_left_padded_greedy_equals_one_by_one(family, tokenizer):
    model = tiny_model(family, vocab_size=300)
    rows = encode_prompts(tokenizer, PROMPTS)
    assert len({len(row) for row in rows}) > 1  # the batch really is padded
    together = generate_texts(model, PROMPTS, settings(), tokenizer=tokenizer, templated=True)
    alone = [generate_texts(model, [p], settings(), tokenizer=tokenizer, templated=True)[0] for p in PROMPTS]
    assert together == alone
    assert all(text for text in together)


def test_steering_changes_tokens_and_exit_restores_them(llama, tokenizer, neurons, stats):
    plain = generate_texts(llama, PROMPTS, settings(), tokenizer=tokenizer)
    edits = Condition(activate=["cc"], strength=4.0).edits(neurons, stats)
    with ln.intervene(llama, edits):
        steered_ctx = generate_texts(llama, PROMPTS, settings(), tokenizer=tokenizer)
    steered = generate_texts(llama, PROMPTS, settings(), edits, tokenizer=tokenizer)
    assert steered == steered_ctx  # the edits argument is the same context manager
    assert steered != plain
    with ln.deactivate(llama, neurons, ["aa", "bb", "cc"]):
        deactivated = generate_texts(llama, PROMPTS, settings(), tokenizer=tokenizer)
    assert deactivated != plain
    assert generate_texts(llama, PROMPTS, settings(), tokenizer=tokenizer) == plain  # bit-identical after exit


def test_activate_holds_the_recorded_mean_at_every_generation_step(llama, tokenizer, neurons, stats):
    """Deactivate bb + activate cc (Table 5's combination) with the KV cache: the hook sees the prompt once, then
    one position per new token, and the chosen neurons carry exactly 0 / strength x recorded mean."""
    strength = 2.5
    site_map = locate_site(llama)
    means = stats.activation_sum / stats.token_count.view(-1, 1, 1)  # brute force from the recorded sums
    cc = stats.languages.index("cc")
    seen: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    edits = Condition(deactivate=["bb"], activate=["cc"], strength=strength).edits(neurons, stats)
    # the capture hook is registered after the intervention's, so it sees the replaced tensor
    rows = encode_prompts(tokenizer, PROMPTS[:3])
    with ln.intervene(llama, edits, site_map=site_map), \
            site_hooks(site_map, lambda layer, t: seen[layer].append(t.detach().clone())):
        generate_batch(llama, tokenizer, rows, settings(max_new_tokens=6, repetition_penalty=1.0))
    prompt_length = max(len(r) for r in rows)
    assert [t.shape[1] for t in seen[0]] == [prompt_length] + [1] * 5  # KV cache: one new position per step
    for layer in (0, 1):
        cc_ids = neurons.layers("cc")[layer]
        bb_ids = neurons.layers("bb")[layer]
        expected = (means[cc, layer, cc_ids] * strength).float()
        for tensor in seen[layer]:
            assert torch.equal(tensor[..., cc_ids], expected.expand(*tensor.shape[:-1], len(cc_ids)))
            assert torch.equal(tensor[..., bb_ids], torch.zeros_like(tensor[..., bb_ids]))
    other = [i for i in range(site_map.width) if i not in set(neurons.layers("bb")[1].tolist())
             | set(neurons.layers("cc")[1].tolist())]
    assert bool(seen[1][0][..., other].ne(0).any())  # other neurons are left alone


def test_stop_strings(tokenizer):
    assert cut_at_stop("Paris.\nQ: next", ("\nQ:", "\nA:")) == ("Paris.", True)
    assert cut_at_stop("x\nA: y\nQ: z", ("\nQ:", "\nA:")) == ("x", True)
    assert cut_at_stop("no stop", ("\nQ:",)) == ("no stop", False)
    prompt = tokenizer("Q: abc\nA:", add_special_tokens=False)["input_ids"]  # the prompt itself ends with \nA:
    going = tokenizer(" def ghi", add_special_tokens=False)["input_ids"]
    stopped = tokenizer(" def\nQ: abc", add_special_tokens=False)["input_ids"]
    width = max(len(going), len(stopped))
    batch = torch.tensor([prompt + going + [0] * (width - len(going)), prompt + stopped + [0] * (width - len(stopped))])
    criteria = _stopping_criteria(tokenizer, ("\nQ:", "\nA:"), len(prompt))
    assert criteria(batch, None).tolist() == [False, True]


def test_sampling_is_seeded_and_unconditional_starts_at_bos(llama, tokenizer):
    sample = settings(sample=True, temperature=1.0, seed=3, max_new_tokens=8)
    first = generate_unconditional(llama, 6, sample, tokenizer=tokenizer)
    state = torch.get_rng_state()
    second = generate_unconditional(llama, 6, sample, tokenizer=tokenizer)
    assert first == second and len(first) == 6
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is untouched
    assert len(set(first)) > 1  # samples differ from each other
    other_seed = generate_unconditional(llama, 6, settings(sample=True, seed=4, max_new_tokens=8), tokenizer=tokenizer)
    assert other_seed != first
    bos = tokenizer.bos_token_id
    # the first new token is drawn after BOS alone: equal to sampling a batch of single-BOS rows directly
    direct = generate_batch(llama, tokenizer, [[bos]] * 4, sample, seed=3)
    assert direct == first[:4]
    with pytest.raises(ln.LangNeuronsError, match="samples"):
        generate_unconditional(llama, 2, settings(), tokenizer=tokenizer)


def test_read_prompts_errors(tmp_path):
    with pytest.raises(ln.LangNeuronsError, match="does not exist"):
        read_prompts(tmp_path / "missing")
    (tmp_path / "p").mkdir()
    with pytest.raises(ln.LangNeuronsError, match="no \\{lang\\}.txt"):
        read_prompts(tmp_path / "p")
    (tmp_path / "p" / "en.txt").write_text("What is a cat?\n\n  Why?  \n")
    (tmp_path / "p" / "fr.txt").write_text("\n \n")
    with pytest.raises(ln.LangNeuronsError, match="fr.txt.* is empty"):
        read_prompts(tmp_path / "p")
    assert read_prompts(tmp_path / "p", ["en"]) == {"en": ["What is a cat?", "Why?"]}
    assert read_prompts(tmp_path / "p", ["en"], limit=1) == {"en": ["What is a cat?"]}
    assert read_prompts(tmp_path / "p", ["en"], max_chars=5) == {"en": ["What", "Why?"]}
    with pytest.raises(ln.LangNeuronsError, match="no prompt file for language.*de"):
        read_prompts(tmp_path / "p", ["en", "de"])


# -- the command -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory, llama_dir, corpus_dir, neurons):
    root = tmp_path_factory.mktemp("gen-artefacts")
    stats = ln.record(str(llama_dir), corpus_dir, seq_len=32, max_tokens=256, progress=False)
    stats.save(root / "stats")
    neurons.save(root / "neurons")
    prompts = root / "prompts"
    prompts.mkdir()
    (prompts / "aa.txt").write_text("abc def\nghij\n")
    (prompts / "bb.txt").write_text("абв где\n")
    return root


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_generate_command_writes_records_and_provenance(artefacts, llama_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    code, _, err = run_cli(
        ["generate", "--model", str(llama_dir), "--prompts", str(artefacts / "prompts"), "--neurons",
         str(artefacts / "neurons"), "--stats", str(artefacts / "stats"), "--deactivate", "bb", "--activate", "cc",
         "--strength", "2", "--also-normal", "--max-new-tokens", "6", "--batch-size", "2", "--out", str(out),
         "--no-progress"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 3  # two conditions x three questions
    assert {r["condition"] for r in records} == {"normal", "deactivate:bb+activate:cc@2"}
    first = records[0]
    assert first["prompt"] == "abc def" and first["input"] == "Q: abc def\nA:" and first["language"] == "aa"
    assert set(first) >= {"output", "detected_language", "deactivate", "activate", "strength"}
    steered = [r for r in records if r["condition"] != "normal"]
    assert all(r["deactivate"] == ["bb"] and r["activate"] == ["cc"] and r["strength"] == 2.0 for r in steered)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "generations" and meta["records"] == 6
    assert meta["language_identifier"]["name"] == "langdetect" and meta["language_identifier"]["version"]
    assert meta["generation"]["repetition_penalty"] == 1.1 and meta["generation"]["decoding"] == "greedy"
    steered_meta = meta["conditions"][1]
    assert steered_meta["site"] == "ffn.act" and steered_meta["strength"] == 2.0
    assert "mean activation" in steered_meta["activate_value"] and steered_meta["statistic"]["site"] == "ffn.act"
    # the same outputs from Python, under the same intervention
    loaded = ln.load_model(str(llama_dir))
    python = generate_texts(loaded, ["abc def", "ghij"],
                            GenerationSettings(max_new_tokens=6, batch_size=2),
                            Condition(["bb"], ["cc"], 2.0).edits(ln.load_neurons(artefacts / "neurons"),
                                                                  ln.load_stats(artefacts / "stats")))
    assert python == [r["output"] for r in steered[:2]]


def test_generate_unconditional_command(artefacts, llama_dir, tmp_path, capsys):
    pytest.importorskip("py3langid")  # an optional identifier, selected with --langid
    out = tmp_path / "unc"
    code, _, err = run_cli(["generate", "--model", str(llama_dir), "--unconditional", "3", "--max-new-tokens", "5",
                            "--out", str(out), "--no-progress", "--langid", "py3langid"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2] and all(r["input"] == "<s>" for r in records)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["generation"]["decoding"] == "sampling" and meta["language_identifier"]["name"] == "py3langid"


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("empty", "is empty"),
    ("unknown-activate", "no language 'zz'"),
    ("activate-without-stats", "--activate needs --stats"),
    ("bad-langid", "unknown language identifier"),
])
def test_generate_command_errors_are_one_line_and_write_nothing(case, message, artefacts, llama_dir, tmp_path, capsys):
    prompts = artefacts / "prompts"
    extra: list[str] = []
    if case == "missing":
        prompts = tmp_path / "nope"
    elif case == "empty":
        prompts = tmp_path / "empty"
        prompts.mkdir()
        (prompts / "aa.txt").write_text("\n")
    elif case == "unknown-activate":
        extra = ["--neurons", str(artefacts / "neurons"), "--stats", str(artefacts / "stats"), "--activate", "zz"]
    elif case == "activate-without-stats":
        extra = ["--neurons", str(artefacts / "neurons"), "--activate", "aa"]
    else:
        extra = ["--langid", "nosuch"]
    out = tmp_path / "out"
    code, _, err = run_cli(["generate", "--model", str(llama_dir), "--prompts", str(prompts), "--out", str(out),
                            "--no-progress", *extra], capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())
