"""Sharing Matters: neuron types, contribution and effective scores, interventions by type, the CLI.

Types, contribution and effective scores are checked against a brute force (each item and language run alone,
unpadded, the site hooked, every equation computed with explicit loops) on a gated (llama) and a GELU (gpt2)
family; hand-made tensors give hand-computed types; per-item interventions equal each item run alone with its
own set.
"""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

import langneurons as ln
from langneurons.analysis.sharing import SharingSettings
from langneurons.analysis.sharing_interventions import TypeEdits, conditions
from langneurons.analysis.sharing_items import build_items, plan_items
from langneurons.analysis.sharing_run import analyse_recording, effective_directions, record_sharing, sharing_matters
from langneurons.data.parallel import ParallelCorpus
from langneurons.data.templates import as_template, render_item
from langneurons.evaluation.tasks import evaluate_task
from langneurons.methods.neuron_types import (
    TYPES,
    conversion_masks,
    random_masks,
    row_type_masks,
    types_from_active,
)
from langneurons.model.sites import locate_site, site_hooks
from langneurons.testbed.tiny import tiny_model

ALPHABETS = {"aa": "abcdefghij", "bb": "абвгдежзик", "cc": "αβγδεζηθικ"}


def parallel_texts(items: int = 6, seed: int = 0) -> dict[str, list[str]]:
    rng = random.Random(seed)
    lengths = [rng.randint(3, 7) for _ in range(items)]
    return {lang: [" ".join("".join(rng.choice(alphabet) for _ in range(rng.randint(2, 5))) for _ in range(n))
                   for n in lengths] for lang, alphabet in ALPHABETS.items()}


# -- hand-made tensors ------------------------------------------------------------------------------------
def test_types_of_hand_made_activations():
    # 3 languages, 1 layer, 6 neurons: all active / none / only bb / aa+cc / exactly at the threshold / aa+bb
    acts = torch.tensor([[[0.5, -1.0, 0.0, 0.2, 0.1, 0.3]],
                         [[0.1, -0.2, 0.7, -0.1, 0.1, 0.4]],
                         [[0.3, 0.0, -0.5, 0.9, 0.1, 0.0]]])
    assert ln.neuron_types(acts).tolist() == [[0, 3, 2, 1, 0, 1]]  # all, non, specific, partial, all, partial
    # threshold 0.1: A = 0.1 is not active (eqs. 4-7 use ">" and "<=")
    assert ln.neuron_types(acts, threshold=0.1).tolist() == [[1, 3, 2, 1, 3, 1]]
    assert TYPES == ("all_shared", "partial_shared", "specific", "non_activated")
    with pytest.raises(ln.LangNeuronsError, match="at least 2 languages"):
        ln.neuron_types(acts[:1])
    with pytest.raises(ln.LangNeuronsError, match="must be a number"):
        ln.neuron_types(acts, threshold="abc")


def test_types_partition_every_item_and_layer():
    generator = torch.Generator().manual_seed(0)
    acts = torch.randn(7, 4, 3, 50, generator=generator)  # items, languages, layers, neurons
    codes = types_from_active(acts > 0, language_dim=1)
    masks = [codes == t for t in range(4)]
    assert torch.equal(sum(m.long() for m in masks), torch.ones_like(codes, dtype=torch.long))
    active = (acts > 0).sum(1)
    assert torch.equal(masks[0], active == 4) and torch.equal(masks[3], active == 0)
    assert torch.equal(masks[2], active == 1) and torch.equal(masks[1], (active > 1) & (active < 4))


def test_row_sets_conversion_and_random_controls_by_hand():
    active = torch.tensor([[[1, 1, 0, 1, 0]], [[1, 0, 0, 1, 1]], [[1, 0, 0, 0, 0]]], dtype=torch.bool)
    codes = types_from_active(active)  # n0 all, n1 specific(aa), n2 non, n3 partial(aa, bb), n4 specific(bb)
    assert codes.tolist() == [[0, 2, 3, 1, 2]]
    spec = row_type_masks(active, codes, "specific")
    assert spec[:, 0].long().tolist() == [[0, 1, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    assert row_type_masks(active, codes, "specific", scope="type")[2, 0].long().tolist() == [0, 1, 0, 0, 1]
    part = row_type_masks(active, codes, "partial_shared")
    assert part[:, 0, 3].tolist() == [True, True, False]
    convert = conversion_masks(active, codes, ["partial_shared", "specific"])
    assert convert[:, 0].long().tolist() == [[0, 0, 0, 0, 1], [0, 1, 0, 0, 0], [0, 1, 0, 1, 1]]
    generator = torch.Generator().manual_seed(3)
    drawn = random_masks(convert, generator, candidates=~active)
    assert torch.equal(drawn.sum(-1), convert.sum(-1))  # same count per row and layer
    assert not bool((drawn & active).any())  # drawn among the inactive neurons only
    like = torch.zeros(2, 3, 40, dtype=torch.bool)
    like[0, :, :5] = True
    like[1, :, :9] = True
    draws = random_masks(like, torch.Generator().manual_seed(1))
    assert draws.sum(-1).tolist() == [[5, 5, 5], [9, 9, 9]]
    assert bool((draws[0] <= draws[1]).all())  # one permutation per layer: the smaller set is nested


# -- templates -----------------------------------------------------------------------------------------
def test_templates_presets_fields_and_errors():
    fields = {"premise": [{"aa": "P-aa", "bb": "P-bb"}], "hypothesis_aa": ["H-aa"], "hypothesis_bb": ["H-bb"],
              "context": ["shared"]}
    xnli = as_template("xnli")
    assert xnli.fields == ["premise", "hypothesis"]
    assert render_item(xnli, "x", fields, 0, "bb") == ("Take the following as truth: P-bb Then the following "
                                                       "statement: 'H-bb' is 'true', 'false', or 'inconclusive'?")
    assert render_item(as_template("knowledge_editing"), "Q?", {**fields, "question": ["q"]}, 0, "aa") == \
        "shared Question: q Answer:"
    assert render_item(as_template("{text} {{x}}"), "line", {}, 0, "aa") == "line {x}"
    assert as_template(None).verbatim and render_item(as_template("{text}"), " as  written ", {}, 0, "aa") == \
        " as  written "
    for bad, message in (("{nope}", "field {nope} has no data"), ("{text", "not a valid format string"),
                         ("plain", "neither a preset"), ("{text!r}", "no format spec")):
        with pytest.raises(ln.LangNeuronsError, match=message) as error:
            render_item(as_template(bad), "x", fields, 0, "aa")
        assert "\n" not in str(error.value)


# -- brute force on tiny models ----------------------------------------------------------------------------
def _down_column(model, family: str, layer: int, neuron: int) -> torch.Tensor:
    if family == "llama":
        return model.model.layers[layer].mlp.down_proj.weight[:, neuron]
    return model.transformer.h[layer].mlp.c_proj.weight[neuron]  # GPT-2 Conv1D: [d_ff, hidden]


def _final_norm_by_hand(model, family: str, hidden: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    if family == "llama":
        norm = model.model.norm
        sigma = torch.sqrt(hidden.pow(2).mean() + norm.variance_epsilon)
        return norm.weight * direction / sigma
    norm = model.transformer.ln_f
    sigma = torch.sqrt(hidden.var(unbiased=False) + norm.eps)
    scaled = norm.weight * direction
    return (scaled - scaled.mean()) / sigma


@torch.no_grad()
def brute_force(model, family: str, items, threshold: float, top: float, final_norm: bool):
    """Everything the accumulator computes, item by item and language by language, run alone and unpadded."""
    act_site, down_site = locate_site(model, "ffn.act"), locate_site(model, "ffn.down_in")
    layer_site = locate_site(model, "layer.out")
    languages, n = items.languages, items.num_items
    k, layers, width = len(languages), act_site.num_layers, act_site.width
    head = model.get_output_embeddings().weight
    counts = torch.zeros(layers, 4, dtype=torch.float64)
    contribution = torch.zeros(k, layers, 4, dtype=torch.float64)
    top_counts = torch.zeros(k, layers, 4, dtype=torch.float64)
    eff = {"max": torch.full((k, layers, 4), -math.inf, dtype=torch.float64),
           "min": torch.full((k, layers, 4), math.inf, dtype=torch.float64),
           "sum": torch.zeros(k, layers, 4, dtype=torch.float64)}
    lang_active = torch.zeros(k, layers, 4, dtype=torch.float64)
    last = {}
    for i in range(n):
        acts, downs, finals = [], [], []
        for lang in languages:
            ids = torch.tensor([items.tokenized.rows[lang][i]])
            seen = {}
            with torch.no_grad(), site_hooks(act_site, lambda l, t: seen.__setitem__(("a", l), t[0, -1].clone())), \
                    site_hooks(down_site, lambda l, t: seen.__setitem__(("d", l), t[0, -1].clone())), \
                    site_hooks(layer_site, lambda l, t: seen.__setitem__(("h", l), t[0, -1].clone())):
                model(input_ids=ids)
            acts.append([seen[("a", l)] for l in range(layers)])
            downs.append([seen[("d", l)] for l in range(layers)])
            finals.append(seen[("h", layers - 1)])
        last[i] = acts
        for l in range(layers):
            types = []
            for w in range(width):
                c = sum(1 for kk in range(k) if acts[kk][l][w] > threshold)
                t = 0 if c == k else 3 if c == 0 else 2 if c == 1 else 1
                types.append(t)
                counts[l, t] += 1
                for kk in range(k):
                    if acts[kk][l][w] > threshold:
                        lang_active[kk, l, t] += 1
            for kk in range(k):
                magnitude = [abs(float(downs[kk][l][w])) * float(_down_column(model, family, l, w).norm())
                             for w in range(width)]
                total = sum(magnitude)
                scores = [m / total for m in magnitude]
                for w in range(width):
                    contribution[kk, l, types[w]] += scores[w]
                for w in sorted(range(width), key=lambda w: -scores[w])[:max(1, round(top * width))]:
                    top_counts[kk, l, types[w]] += 1
                if items.gold is not None:
                    direction = head[items.gold[kk, i]].double()
                    if final_norm:
                        direction = _final_norm_by_hand(model, family, finals[kk].double(), direction)
                    for w in range(width):
                        value = float(downs[kk][l][w]) * float(_down_column(model, family, l, w).double() @ direction)
                        t = types[w]
                        eff["max"][kk, l, t] = max(eff["max"][kk, l, t], value)
                        eff["min"][kk, l, t] = min(eff["min"][kk, l, t], value)
                        eff["sum"][kk, l, t] += value
    return dict(counts=counts, contribution=contribution, top_counts=top_counts, eff=eff, lang_active=lang_active,
                last=last)


@pytest.mark.parametrize("family,side,task,final_norm", [("llama", "left", "cloze", False),
                                                         ("gpt2", "right", "cloze", True),
                                                         ("llama", "right", None, False)])
def test_types_contribution_effective_equal_brute_force(tokenizer, family, side, task, final_norm):
    model = tiny_model(family, vocab_size=300)
    corpus = ParallelCorpus(parallel_texts(6))
    items = build_items(tokenizer, corpus, task=task)
    threshold = 0.01
    settings = SharingSettings(threshold=threshold, thresholds=(0.0, threshold), language_counts=(2, 3), top=0.05)
    recording = record_sharing(model, items, threshold, batch_size=5, padding_side=side, final_hidden=final_norm,
                               progress=False)
    acc = analyse_recording(model, recording, items, settings, embedding="output", final_norm=final_norm,
                            progress=False)
    expected = brute_force(model, family, items, threshold, 0.05, final_norm)
    n, width = items.num_items, acc.width
    # last-token extraction under padding equals each input run alone
    for i in range(n):
        for k in range(3):
            for layer in range(acc.num_layers):
                torch.testing.assert_close(recording.acts.vectors[k, i, layer], expected["last"][i][k][layer],
                                           rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(acc.types_by_layer(), expected["counts"] / (n * width))
    assert torch.allclose(acc.types_by_layer().sum(-1), torch.ones(acc.num_layers, dtype=torch.float64))
    torch.testing.assert_close(acc.types_by_language(), expected["lang_active"] / (n * width))
    torch.testing.assert_close(acc.threshold_sweep()[1], acc.types_by_layer())
    torch.testing.assert_close(acc.language_subsets()[1], acc.types_by_layer())  # all three languages
    scores = acc.contribution()
    torch.testing.assert_close(scores["sum"], expected["contribution"] / n, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(scores["top_share"], expected["top_counts"] / (n * acc.top_size))
    if task is None:
        assert not acc.has_effective and items.gold is None
        return
    effective = acc.effective()
    present = expected["counts"].unsqueeze(0).expand_as(effective["max"]) > 0
    for key in ("max", "min"):
        torch.testing.assert_close(effective[key][present], expected["eff"][key][present], rtol=1e-4, atol=1e-8)
    mean = expected["eff"]["sum"] / expected["counts"].unsqueeze(0).clamp_min(1)
    torch.testing.assert_close(effective["mean"][present], mean[present], rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_final_norm_map_reproduces_the_norm(family):
    from langneurons.analysis.sharing_run import final_norm_map

    model = tiny_model(family, vocab_size=300)
    hidden = torch.randn(4, 32, generator=torch.Generator().manual_seed(0)) * 3 + 0.5
    gain, centred = final_norm_map(model, hidden)
    norm = model.model.norm if family == "llama" else model.transformer.ln_f
    with torch.no_grad():
        target = norm(hidden) - norm(torch.zeros(1, 32))
    projected = hidden - hidden.mean(-1, keepdim=True) if centred else hidden
    torch.testing.assert_close(gain * projected, target, rtol=1e-4, atol=1e-5)
    assert centred == (family == "gpt2")
    tokens = torch.tensor([5, 7, 9, 11])
    directions = effective_directions(model, tokens, hidden, final_norm=True)
    head = model.get_output_embeddings().weight
    for row in range(4):
        torch.testing.assert_close(directions[row].double(),
                                   _final_norm_by_hand(model, family, hidden[row].double(), head[tokens[row]].double()),
                                   rtol=1e-4, atol=1e-6)


def test_dead_for_every_token_equals_brute_force(tokenizer):
    model = tiny_model("gpt2", vocab_size=300)
    items = build_items(tokenizer, ParallelCorpus(parallel_texts(4)), task="cloze")
    recording = record_sharing(model, items, 0.0, batch_size=6, padding_side="left", progress=False)
    site = locate_site(model, "ffn.act")
    for k, lang in enumerate(items.languages):
        for i in range(items.num_items):
            row = items.tokenized.rows[lang][i]
            seen = {}
            with torch.no_grad(), site_hooks(site, lambda l, t: seen.__setitem__(l, t[0].clone())):
                model(input_ids=torch.tensor([row]))
            start = 1 if items.tokenized.bos else 0  # a BOS the tokenizer adds does not count
            for layer in range(site.num_layers):
                dead = (seen[layer][start:] <= 0).all(0)
                assert recording.dead.dead[k, i, layer] == int(dead.sum())
    assert bool((recording.dead.dead_every_language <= recording.dead.dead.min(0).values).all())


# -- interventions: per item, per row ----------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_per_item_interventions_equal_each_item_alone_with_its_own_set(tokenizer, family):
    from langneurons.model.loading import as_loaded

    model = tiny_model(family, vocab_size=300)
    loaded = as_loaded(model, tokenizer)
    items = build_items(tokenizer, ParallelCorpus(parallel_texts(5)), task="cloze")
    recording = record_sharing(model, items, 0.0, batch_size=9, progress=False)
    edits = TypeEdits(model, recording.acts, items, threshold=0.0, epsilon=1e-3, seed=0)
    for family_name, condition in (("deactivation", "all_shared"), ("deactivation", "random_specific"),
                                   ("conversion", "partial_shared+specific")):
        batched = evaluate_task(loaded, items.task, [condition], batch_size=7, progress=False,
                                batch_edit=edits.batch_edit(family_name))
        changed = False
        for score in batched.items[condition]:
            i, k = items.index_of()[score.id], items.languages.index(score.language)
            mask = edits.masks(family_name, condition, i)[k]
            neurons = ln.NeuronSet.from_masks({"row": mask})
            edit = ln.Zero(neurons) if family_name == "deactivation" else ln.SetValue(neurons, value=1e-3)
            alone_task = items.task.select([score.language])
            alone_task.items = [item for item in alone_task.items if item.id == score.id]
            alone = evaluate_task(loaded, alone_task, [condition], batch_size=1, progress=False,
                                  edit=lambda c, lang, col, e=edit: ln.intervene(model, [e]))
            got, want = score.details["logprob"], alone.items[condition][0].details["logprob"]
            assert got == pytest.approx(want, rel=1e-4, abs=1e-4)
            normal = evaluate_task(loaded, alone_task, ["normal"], batch_size=1, progress=False)
            changed |= any(abs(a - b) > 1e-6 for a, b in zip(got, normal.items["normal"][0].details["logprob"]))
        assert changed, f"{condition} changed no log-likelihood"


def test_conversion_makes_the_converted_neurons_all_shared(tokenizer):
    model = tiny_model("llama", vocab_size=300)
    items = build_items(tokenizer, ParallelCorpus(parallel_texts(3)))
    recording = record_sharing(model, items, 0.0, batch_size=3, progress=False)
    edits = TypeEdits(model, recording.acts, items, threshold=0.0, epsilon=1e-3)
    masks = edits.masks("conversion", "partial_shared+specific", 0)
    active = recording.acts.vectors[:, 0] > 0
    after = active | masks  # the converted neurons are set to 0.001 > 0 in the rows where they were inactive
    codes = types_from_active(active)
    converted = (codes == 1) | (codes == 2)
    assert bool(after.all(0)[converted].all())
    assert bool((masks.sum(0)[codes == 0] == 0).all()) and bool((masks.sum(0)[codes == 3] == 0).all())
    assert conditions("conversion") == ["partial_shared", "specific", "partial_shared+specific", "random_partial_shared",
                                        "random_specific", "random_partial_shared+specific"]


def test_answer_that_tokenizes_to_nothing_is_a_clear_error(tokenizer):
    class Silent:
        """The tokenizer, except that the answer "zzz" encodes to no token at all."""

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, text, **kwargs):
            if text == " zzz" or text == "zzz":
                return {"input_ids": []}
            if isinstance(text, str) and text.endswith(" zzz"):
                return self.inner(text[:-4], **kwargs)
            return self.inner(text, **kwargs)

    texts = parallel_texts(2)
    corpus = ParallelCorpus(texts, {"answer": [{"aa": "zzz", "bb": "x", "cc": "y"}, "x"]})
    plan = plan_items(corpus, task="first_token")
    with pytest.raises(ln.LangNeuronsError, match="tokenizes to nothing") as error:
        plan.tokenize(Silent(tokenizer))
    assert "\n" not in str(error.value)


def test_without_a_task_effective_and_interventions_are_skipped(tokenizer, tmp_path):
    model = tiny_model("gpt2", vocab_size=300)
    result = sharing_matters(model, parallel_texts(4), tokenizer=tokenizer, progress=False, batch_size=4)
    assert set(result.skipped) == {"effective", "deactivation", "conversion"}
    out = result.save(tmp_path / "out")
    files = {p.name for p in out.iterdir()}
    assert {"types_by_layer.csv", "types_by_language.csv", "contribution.csv", "meta.json"} <= files
    assert not {"effective.csv", "deactivation.csv", "conversion.csv"} & files
    meta = json.loads((out / "meta.json").read_text())
    assert meta["skipped"]["effective"].startswith("needs a gold answer")
    assert meta["inputs"]["tokenization"] == "as written (no special tokens)"


# -- the method contract (neuron_types) ------------------------------------------------------------------
def test_neuron_types_method_selects_one_items_rows_and_the_overlap():
    from langneurons.stats.pooled import PooledVectors

    vectors = torch.tensor([[[[1.0, 1.0, -1.0, 1.0]], [[1.0, -1.0, -1.0, 1.0]]],
                            [[[1.0, -1.0, -1.0, -1.0]], [[1.0, -1.0, 1.0, 1.0]]]])  # [K=2, N=2, L=1, W=4]
    pooled = PooledVectors(["aa", "bb"], vectors, mode="last", meta={"site": "ffn.act", "model": "hand"})
    first = ln.identify(pooled, "neuron_types", kind="specific", item=0)
    assert {lang: first.layers(lang)[0].tolist() for lang in first.languages} == {"aa": [1, 3], "bb": []}
    shared = ln.identify(pooled, "neuron_types", kind="all_shared", item=None)
    assert shared.layers("aa")[0].tolist() == [0]  # all-shared in both items: neuron 0 only


# -- the command ------------------------------------------------------------------------------------------
def _write_parallel(directory, texts):
    directory.mkdir(parents=True, exist_ok=True)
    for lang, lines in texts.items():
        (directory / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def test_cli_writes_every_table_and_figure(llama_dir, tmp_path, capsys):
    from langneurons.cli.main import main

    corpus = _write_parallel(tmp_path / "par", parallel_texts(5))
    out = tmp_path / "out"
    code = main(["sharing", "--model", str(llama_dir), "--parallel", str(corpus), "--task", "cloze", "--out",
                 str(out), "--no-progress", "--batch-size", "6", "--thresholds", "0,0.5"])
    assert code == 0, capsys.readouterr().err
    lines = (out / "types_by_layer.csv").read_text().splitlines()
    assert lines[0] == "layer,all_shared,partial_shared,specific,non_activated"
    for line in lines[1:]:
        assert sum(float(v) for v in line.split(",")[1:]) == pytest.approx(1.0, abs=1e-5)
    for name in ("deactivation.csv", "conversion.csv"):
        rows = [line.split(",") for line in (out / name).read_text().splitlines()]
        assert rows[0] == ["condition", "aa", "bb", "cc"] and rows[1][0] == "normal"
        assert all(0.0 <= float(v) <= 1.0 for row in rows[1:] for v in row[1:])
    deactivation = [row.split(",")[0] for row in (out / "deactivation.csv").read_text().splitlines()[1:]]
    assert deactivation == ["normal", "all_shared", "partial_shared", "specific", "random_all_shared",
                            "random_partial_shared", "random_specific"]
    assert "type" in (out / "contribution.csv").read_text().splitlines()[0].split(",")
    assert "type" in (out / "effective.csv").read_text().splitlines()[0].split(",")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "sharing_matters" and meta["parameters"]["threshold"] == 0.0
    assert "without the final norm" in meta["effective_score"]
    figures = {figure["file"] for figure in meta["figures"]}
    assert {"types_by_layer.png", "types_by_language.png", "persistence.png", "dead_neurons.png",
            "types_by_threshold.png", "types_by_language_count.png", "contribution_top.png",
            "contribution_mean_sum.png", "effective_max.png"} <= figures
    assert all((out / name).is_file() for name in figures)


@pytest.mark.parametrize("case", ["misaligned", "field", "threshold", "answer"])
def test_cli_bad_input_is_one_line_and_writes_nothing(llama_dir, tmp_path, capsys, case):
    from langneurons.cli.main import main

    texts = parallel_texts(3)
    args = ["sharing", "--model", str(llama_dir), "--no-progress"]
    if case == "misaligned":
        texts["bb"] = texts["bb"][:2]
        args += ["--parallel", str(_write_parallel(tmp_path / "par", texts))]
    elif case == "field":
        args += ["--parallel", str(_write_parallel(tmp_path / "par", texts)), "--template", "{premise} {text}"]
    elif case == "threshold":
        args += ["--parallel", str(_write_parallel(tmp_path / "par", texts)), "--threshold", "abc"]
    else:
        path = tmp_path / "items.jsonl"
        path.write_text("\n".join(json.dumps({"aa": texts["aa"][i], "bb": texts["bb"][i], "answer": " "})
                                  for i in range(3)) + "\n")
        args += ["--parallel", str(path), "--task", "first_token"]
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err
    expected = {"misaligned": "not aligned", "field": "{premise} has no data", "threshold": "must be a number",
                "answer": "answer"}[case]
    assert expected in err
    assert not out.exists()


def test_large_runs_are_memory_mapped_float16_and_cleaned_up(tokenizer, tmp_path):
    model = tiny_model("llama", vocab_size=300)
    items = build_items(tokenizer, ParallelCorpus(parallel_texts(4)), task="cloze")
    small = record_sharing(model, items, batch_size=6, progress=False)
    large = record_sharing(model, items, batch_size=6, progress=False, large_threshold=10, scratch_dir=tmp_path)
    assert small.acts.storage["kind"] == "memory" and small.acts.vectors.dtype == torch.float32
    assert large.acts.storage["kind"] == "memmap" and large.acts.vectors.dtype == torch.float16
    assert large.writes is not large.acts and large.writes.storage["kind"] == "memmap"  # gated: ffn.down_in too
    torch.testing.assert_close(large.acts.vectors.float(), small.acts.vectors, rtol=1e-2, atol=1e-3)
    settings = SharingSettings(thresholds=(0.0,))
    a = analyse_recording(model, small, items, settings, progress=False)
    b = analyse_recording(model, large, items, settings, progress=False)
    assert (a.types_by_layer() - b.types_by_layer()).abs().max() < 0.02  # float16 flips only values near 0
    assert large.scratch is not None and large.scratch.parent == tmp_path
    large.close()
    assert not any(tmp_path.iterdir())


def test_a_task_is_aligned_by_item_id():
    from langneurons.evaluation.tasks import Task, TaskItem

    items = [TaskItem(str(i), "aa", f"p{i}", answers=("x",)) for i in range(3)] + \
        [TaskItem(str(i), "bb", f"q{i}", answers=("y",)) for i in (2, 0)]
    plan = plan_items(task=Task("t", "first_token", items), template="Q: {text}")
    assert plan.ids == ["0", "2"] and plan.prompts == {"aa": ["Q: p0", "Q: p2"], "bb": ["Q: q0", "Q: q2"]}
    with pytest.raises(ln.LangNeuronsError, match="{premise} has no data"):
        plan_items(task=Task("t", "first_token", items), template="{premise} {text}")
