"""Lingua Franca (Zeng et al. 2024): eqs. 5-14 against explicit loops and hand-made answers; the command."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pytest
import torch

import langneurons as ln
from langneurons.errors import LangNeuronsWarning
from langneurons.analysis.alignment import alignment, lrds_sads, sample_labels
from langneurons.analysis.lingua_franca import activation_vectors, key_regions, prepare_parallel
from langneurons.methods.key_regions import KeyRegions, contribution_scores, unit_vectors, z_scores
from langneurons.model.sites import locate_site, site_hooks
from langneurons.stats.pooled import PooledVectors
from langneurons.testbed.tiny import tiny_model


def explicit_unit(vectors: torch.Tensor) -> list[list[list[float]]]:
    """Eq. 6 with loops: a[k][i] = concatenated layers / their norm."""
    out = []
    for k in range(vectors.shape[0]):
        rows = []
        for i in range(vectors.shape[1]):
            flat = [float(v) for layer in vectors[k, i] for v in layer]
            norm = math.sqrt(sum(v * v for v in flat))
            rows.append([v / norm for v in flat])
        out.append(rows)
    return out


# -- eq. 11 ------------------------------------------------------------------------------------------------------
def test_closed_form_contribution_equals_the_pairwise_sum():
    vectors = torch.randn(3, 5, 2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = explicit_unit(vectors)
    closed = contribution_scores(vectors).flatten(1)  # [K, L * W]
    for k in range(3):
        for neuron in range(8):
            pairwise = sum(a[k][i][neuron] * a[k][j][neuron] for i in range(5) for j in range(i + 1, 5))
            assert closed[k, neuron].item() == pytest.approx(pairwise, abs=1e-12)
        # eq. 10: the contributions add up to the sum of S_ij over the language's pairs
        total = sum(sum(x * y for x, y in zip(a[k][i], a[k][j])) for i in range(5) for j in range(i + 1, 5))
        assert float(closed[k].sum()) == pytest.approx(total, abs=1e-12)


def test_contribution_uses_the_whole_model_normalisation_not_per_layer():
    vectors = torch.ones(2, 2, 2, 1, dtype=torch.float64)
    vectors[:, :, 1] = 3.0  # layer 1 three times layer 0: per-layer normalisation would give 1 and 1
    # a = (1, 3) / sqrt(10) for every sample; one pair per language: a_k^2
    expected = torch.tensor([[[0.1], [0.9]]] * 2, dtype=torch.float64)
    torch.testing.assert_close(contribution_scores(vectors), expected)


# -- eqs. 12-14 ----------------------------------------------------------------------------------------------------
def test_z_scores_match_numpy_population_std():
    scores = np.array([[0.3, 1.0, 2.0, 5.0], [0.1, 1.0, -1.0, 5.0], [0.8, 1.0, 0.5, 5.0], [0.2, 1.0, 4.0, 5.0]])
    std = scores.std(0, ddof=0)
    expected = (scores - scores.mean(0)) / np.where(std > 0, std, 1.0)
    assert (std[[1, 3]] == 0).all()
    expected[:, [1, 3]] = 0.0  # equal in every language: std 0, special to no language
    np.testing.assert_allclose(z_scores(torch.tensor(scores)).numpy(), expected, rtol=1e-12)


def test_the_largest_z_score_is_sqrt_k_minus_1_and_a_threshold_there_selects_nothing():
    k = 5
    scores = torch.zeros(k, 1, 1, dtype=torch.float64)
    scores[2] = 7.0  # one language stands out
    assert z_scores(scores)[2].item() == pytest.approx(math.sqrt(k - 1))
    vectors = _planted(k)
    with pytest.warns(LangNeuronsWarning, match=r"at least sqrt\(K - 1\) = 2.000"):
        method = KeyRegions(threshold=2.0).fit(vectors)
    regions = method.select()
    assert sum(regions.sizes().values()) == 0 and "sqrt(K - 1)" in regions.parameters["note"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sum(KeyRegions(threshold=1.9).fit(vectors).select().sizes().values()) > 0


def _planted(num_languages: int, samples: int = 4, width: int = 6) -> PooledVectors:
    """Neuron 2k of layer 0 fires only in language k (plus a shared background on every neuron)."""
    generator = torch.Generator().manual_seed(1)
    vectors = 0.1 + 0.01 * torch.rand(num_languages, samples, 2, width * num_languages, generator=generator)
    for k in range(num_languages):
        vectors[k, :, 0, 2 * k] += 1.0
    return PooledVectors([f"l{k}" for k in range(num_languages)], vectors, meta={"site": "ffn.act", "model": "hand"})


def test_key_regions_find_the_planted_neurons():
    regions = key_regions(_planted(6), threshold=2.0)
    for k in range(6):
        assert 2 * k in regions.layers(f"l{k}")[0].tolist()
        assert all(2 * j not in regions.layers(f"l{k}")[0].tolist() for j in range(6) if j != k)
    assert regions.method == "key_regions" and regions.parameters["threshold"] == 2.0


# -- eqs. 8 and 9 --------------------------------------------------------------------------------------------------
def brute_lrds_sads(similarity, languages, meanings):
    groups = {key: [] for key in ("ll", "nn", "mm")}
    n = similarity.shape[0]
    for i, j in itertools.permutations(range(n), 2):
        same_l, same_m = languages[i] == languages[j], meanings[i] == meanings[j]
        if same_l and not same_m:
            groups["ll"].append(float(similarity[i, j]))
        elif not same_l and same_m:
            groups["mm"].append(float(similarity[i, j]))
        elif not same_l and not same_m:
            groups["nn"].append(float(similarity[i, j]))
    mean = {key: sum(v) / len(v) for key, v in groups.items()}
    return mean["ll"] - mean["nn"], mean["mm"] - mean["nn"]


def hand_similarity(num_languages=3, items=4):
    """1 on the diagonal, 0.7 within a language, 0.5 between translations, 0.2 otherwise: LRDS 0.5, SADS 0.3."""
    languages, meanings = sample_labels(num_languages, items)
    same_l = languages[:, None] == languages[None, :]
    same_m = meanings[:, None] == meanings[None, :]
    similarity = torch.full(same_l.shape, 0.2, dtype=torch.float64)
    similarity[same_l & ~same_m] = 0.7
    similarity[~same_l & same_m] = 0.5
    similarity.fill_diagonal_(1.0)
    return similarity, languages, meanings


def test_lrds_sads_on_a_hand_made_map_with_known_groups():
    similarity, languages, meanings = hand_similarity()
    lrds, sads = lrds_sads(similarity, languages, meanings)
    assert (lrds, sads) == pytest.approx((0.5, 0.3), abs=1e-12)
    noisy = similarity + 0.05 * torch.randn(similarity.shape, generator=torch.Generator().manual_seed(2),
                                            dtype=torch.float64)
    noisy = (noisy + noisy.T) / 2
    assert lrds_sads(noisy, languages, meanings) == pytest.approx(
        brute_lrds_sads(noisy, languages.tolist(), meanings.tolist()), abs=1e-12)


def test_stride_grouping_of_the_reference_code_gives_another_sads():
    """Their code groups sentence i of language k with sentence i + k of another: not the translations."""
    similarity, languages, meanings = hand_similarity(3, 4)
    stride = (meanings + languages) % 4  # sample i of language k labelled as meaning i + k
    ours = lrds_sads(similarity, languages, meanings)
    theirs = lrds_sads(similarity, languages, stride)
    assert theirs == pytest.approx(brute_lrds_sads(similarity, languages.tolist(), stride.tolist()), abs=1e-12)
    assert ours[1] == pytest.approx(0.3) and abs(theirs[1] - ours[1]) > 0.1


def test_alignment_whole_and_per_layer_equal_brute_force():
    vectors = torch.randn(3, 4, 3, 5, generator=torch.Generator().manual_seed(3)).abs()
    result = alignment(vectors)
    a = [row for rows in explicit_unit(vectors.double()) for row in rows]
    n = len(a)
    brute = torch.tensor([[sum(x * y for x, y in zip(a[i], a[j])) for j in range(n)] for i in range(n)],
                         dtype=torch.float64)
    torch.testing.assert_close(result.similarity, brute)
    languages, meanings = sample_labels(3, 4)
    assert (result.lrds, result.sads) == pytest.approx(brute_lrds_sads(brute, languages.tolist(), meanings.tolist()))
    for layer in range(3):
        part = explicit_unit(vectors[:, :, layer : layer + 1].double())
        rows = [row for rows in part for row in rows]
        layer_map = torch.tensor([[sum(x * y for x, y in zip(rows[i], rows[j])) for j in range(n)] for i in range(n)],
                                 dtype=torch.float64)
        expected = brute_lrds_sads(layer_map, languages.tolist(), meanings.tolist())
        assert (result.layer_lrds[layer].item(), result.layer_sads[layer].item()) == pytest.approx(expected)
    assert result.rows()[0][0] == "all" and [r[0] for r in result.rows()[1:]] == [0, 1, 2]


# -- eq. 5 on models -----------------------------------------------------------------------------------------------
@pytest.fixture
def parallel_dir(tmp_path):
    lines = {"aa": ["abc def", "ghij", "", "a b c d e f g", "hi"],
             "bb": ["абв где", "жзик", "ж", "а б в г д", "ик"],
             "cc": ["αβγ δεζ", "ηθ", "ι", "α β γ δ ε ζ", "κα"]}
    root = tmp_path / "parallel"
    root.mkdir()
    for lang, rows in lines.items():
        (root / f"{lang}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("family,site", [("llama", "ffn.act"), ("llama", "ffn.down_in"), ("gpt2", "ffn.act")])
@pytest.mark.parametrize("pooling,bos,side", [("mean", False, "right"), ("sum", True, "left")])
def test_vectors_equal_each_sample_run_alone(parallel_dir, tokenizer, family, site, pooling, bos, side):
    model = tiny_model(family, vocab_size=300)
    parallel = prepare_parallel(parallel_dir)
    assert parallel.num_items == 4 and parallel.source["item_ids"] == [0, 1, 3, 4]  # item 2 is blank in aa
    vectors = activation_vectors(model, parallel, site=site, pooling=pooling, add_bos=bos, batch_size=4,
                                 padding_side=side, tokenizer=tokenizer, progress=False)
    site_map = locate_site(model, site)
    brute = torch.zeros_like(vectors.vectors)
    for k, lang in enumerate(parallel.languages):
        for i, line in enumerate(parallel.texts(lang)):
            ids = tokenizer(line, add_special_tokens=False)["input_ids"]
            ids = ([tokenizer.bos_token_id] if bos else []) + ids
            seen = {}
            with torch.no_grad(), site_hooks(site_map, lambda layer, t: seen.__setitem__(layer, t[0].clone())):
                model(input_ids=torch.tensor([ids]))
            for layer in range(site_map.num_layers):
                acts = seen[layer][1:] if bos else seen[layer]  # the BOS runs but is not pooled
                brute[k, i, layer] = acts.mean(0) if pooling == "mean" else acts.sum(0)
    torch.testing.assert_close(vectors.vectors, brute, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(unit_vectors(vectors), torch.tensor(explicit_unit(brute.double()), dtype=torch.float64), rtol=1e-4,
                               atol=1e-6)


def test_sum_pooling_equals_mean_pooling_once_normalised(parallel_dir, tokenizer):
    model = tiny_model("llama", vocab_size=300)
    parallel = prepare_parallel(parallel_dir)
    runs = {p: activation_vectors(model, parallel, pooling=p, tokenizer=tokenizer, progress=False)
            for p in ("mean", "sum")}
    assert not torch.allclose(runs["mean"].vectors, runs["sum"].vectors)
    mean, total = alignment(runs["mean"]), alignment(runs["sum"])
    torch.testing.assert_close(mean.similarity, total.similarity)
    torch.testing.assert_close(mean.layer_sads, total.layer_sads)


def test_memory_mapped_float16_vectors_give_the_same_scores(parallel_dir, tokenizer, tmp_path):
    model = tiny_model("gpt2", vocab_size=300)
    parallel = prepare_parallel(parallel_dir)
    memory = activation_vectors(model, parallel, tokenizer=tokenizer, progress=False)
    mapped = activation_vectors(model, parallel, tokenizer=tokenizer, progress=False, storage="memmap",
                                storage_dir=tmp_path / "scratch")
    assert mapped.storage["kind"] == "memmap" and (tmp_path / "scratch" / "vectors.npy").is_file()
    torch.testing.assert_close(alignment(mapped).similarity, alignment(memory).similarity)
    half = PooledVectors(memory.languages, memory.vectors.half(), meta=memory.meta)
    assert alignment(half).lrds == pytest.approx(alignment(memory).lrds, abs=1e-3)


def test_bad_corpora_are_one_line_errors(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "aa.txt").write_text("x\ny\n")
    with pytest.raises(ln.LangNeuronsError, match="at least two languages"):
        prepare_parallel(tmp_path / "one")
    (tmp_path / "one" / "bb.txt").write_text("x\n\n")  # aligned, but item 1 is blank in bb
    with pytest.raises(ln.LangNeuronsError, match="at least two samples in every language, got 1"):
        prepare_parallel(tmp_path / "one")
    with pytest.raises(ln.LangNeuronsError, match="at least two languages"):
        alignment(torch.ones(1, 3, 1, 2))


# -- Table 1 -------------------------------------------------------------------------------------------------------
def test_deactivation_table_from_a_hand_made_matrix():
    from langneurons.analysis.region_deactivation import RANDOM, DeactivationTable, with_random_set
    from langneurons.evaluation.perplexity import PerplexityMatrix

    ppl = torch.tensor([[10.0, 20.0], [11.0, 22.0], [15.0, 21.0], [10.5, 40.0]], dtype=torch.float64)  # normal, random, xaa, xbb
    matrix = PerplexityMatrix(["normal", RANDOM, "aa", "bb"], ["aa", "bb"], ppl.log(), {})
    table = DeactivationTable(matrix, {RANDOM: 10, "aa": 3, "bb": 5}, 100, 10.0)
    torch.testing.assert_close(table.increase(), torch.tensor([[10.0, 50.0, 5.0], [10.0, 5.0, 100.0]],
                                                              dtype=torch.float64))
    assert table.own_increase() == pytest.approx({"aa": 50.0, "bb": 100.0})
    main, _ = table.tables()
    assert main.header == ["language", "full_model_perplexity", "random_10pct", "x_aa", "x_bb"]
    assert main.rows[-2] == ["key_neuron_number", None, 10, 3, 5]
    assert main.rows[-1] == ["key_neuron_percentage", None, 10.0, 3.0, 5.0]
    regions = ln.NeuronSet({"aa": [torch.tensor([1]), torch.tensor([])]}, 2, 50, site="ffn.act")
    combined = with_random_set(regions, 10.0, seed=1)
    assert combined.size(RANDOM) == 10 and combined.size("aa") == 1
    with pytest.raises(ln.LangNeuronsError, match=r"\(0, 100\]"):
        with_random_set(regions, 0)


def test_steps_of_checkpoints_and_revisions(tmp_path):
    from langneurons.analysis.evolution import ModelPoint, model_points

    assert ModelPoint("runs/x/checkpoint-250/", "m").step == 250
    assert ModelPoint("global_step1000", "m").step == 1000 and ModelPoint("main", "m").step is None
    (tmp_path / "checkpoint-5").mkdir()
    groups = model_points("org/model", [str(tmp_path / "checkpoint-5"), "global_step9"], [])
    assert [(p.model, p.revision) for p in groups[0].points] == [(str(tmp_path / "checkpoint-5"), None),
                                                                   ("org/model", "global_step9")]
    with pytest.raises(ln.LangNeuronsError, match="not a model folder"):
        model_points(str(tmp_path), ["global_step9"], [])
    with pytest.raises(ln.LangNeuronsError, match="does not exist"):
        model_points("org/model", ["./nowhere/checkpoint-1"], [])


# -- the command ---------------------------------------------------------------------------------------------------
def run_cli(*args) -> int:
    from langneurons.cli.main import main

    return main([str(a) for a in args])


def test_command_writes_every_output(llama_dir, parallel_dir, valid_dir, tmp_path, capsys):
    for lang in ("bb", "cc"):  # the validation corpus has aa, bb, cc
        assert (valid_dir / f"{lang}.txt").exists()
    checkpoints = []
    for step in (1, 2):
        target = tmp_path / f"checkpoint-{step}"
        target.symlink_to(llama_dir, target_is_directory=True)
        checkpoints.append(target)
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"id": f"q{i}", "language": lang, "prompt": prompt, "options": options,
                                        "label": i % 2}, ensure_ascii=False) + "\n"
                            for lang, prompt, options in [("aa", "abc", ["def", "ghi"]), ("bb", "абв", ["где", "жз"]),
                                                          ("cc", "αβγ", ["δεζ", "ηθ"])] for i in range(3)),
                    encoding="utf-8")
    out = tmp_path / "lf"
    code = run_cli("lingua-franca", "--model", llama_dir, "--parallel", parallel_dir, "--out", out, "--threshold", 1.0,
                   "--ppl-corpus", valid_dir, "--max-tokens", 200, "--seq-len", 32, "--random-percent", 25,
                   "--checkpoints", *checkpoints, "--save-vectors", tmp_path / "vectors", "--task", task,
                   "--no-progress", "--device", "cpu")
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "lingua_franca" and meta["languages"] == ["aa", "bb", "cc"]
    header, *rows = (out / "lrds_sads.csv").read_text().splitlines()
    assert header == "layer,lrds,sads" and [r.split(",")[0] for r in rows] == ["all", "0", "1"]
    assert (out / "key_neurons.csv").read_text().splitlines()[0] == "language,layer,count"
    similarity = np.load(out / "similarity.npy")
    assert similarity.dtype == np.float32 and similarity.shape == (12, 12)
    from langneurons.stats.pooled import load_pooled

    vectors = load_pooled(tmp_path / "vectors")
    np.testing.assert_allclose(similarity, alignment(vectors).similarity.numpy(), rtol=1e-5, atol=1e-6)
    regions = ln.load_neurons(out / "key_regions.neurons")
    assert regions.sizes() == meta["summary"]["key_neurons"] and regions.method == "key_regions"
    deactivation = (out / "deactivation.csv").read_text().splitlines()
    assert deactivation[0] == "language,full_model_perplexity,random_25pct,x_aa,x_bb,x_cc"
    assert [line.split(",")[0] for line in deactivation[1:]] == ["aa", "bb", "cc", "key_neuron_number",
                                                                 "key_neuron_percentage"]
    evolution = (out / "evolution.csv").read_text().splitlines()
    assert evolution[0].startswith("point,step,lrds,sads,sklr,sklr_percent,task_accuracy") and len(evolution) == 3
    accuracy = (out / "task_accuracy.csv").read_text().splitlines()
    assert accuracy[0] == "language,full_model,random_25pct,x_aa,x_bb,x_cc" and len(accuracy) == 4
    from langneurons.evaluation.tasks import load_task, task_accuracy

    normal = task_accuracy(str(llama_dir), load_task(task), device="cpu", progress=False)
    assert [float(line.split(",")[1]) for line in accuracy[1:]] == pytest.approx(normal.row("normal").tolist(),
                                                                                  abs=1e-4)
    assert {f["file"] for f in meta["figures"]} >= {"similarity.png", "lrds_sads.png", "key_neurons_layers.png",
                                                   "key_neurons_languages.png", "deactivation.png", "evolution.png"}
    # the same model at every checkpoint: the same metrics as the main model
    assert meta["summary"]["evolution"]["lrds"] == pytest.approx([meta["summary"]["lrds"]] * 2)
    # the regions are a neuron set of every command: identify re-selects them from the saved vectors
    assert run_cli("identify", "--method", "key_regions", "--vectors", tmp_path / "vectors", "--param",
                   "threshold=1.0", "--out", tmp_path / "again.neurons") == 0
    assert ln.load_neurons(tmp_path / "again.neurons").sizes() == regions.sizes()
    assert run_cli("perplexity", "--model", llama_dir, "--corpus", valid_dir, "--neurons", out / "key_regions.neurons",
                   "--max-tokens", 100, "--seq-len", 32, "--out", tmp_path / "ppl", "--no-progress",
                   "--device", "cpu") == 0


def test_models_of_several_sizes_are_placed_by_parameters(llama_dir, tokenizer, parallel_dir, tmp_path):
    from langneurons.analysis.lingua_franca import lingua_franca_evolution

    bigger = tmp_path / "bigger"
    tiny_model("llama", vocab_size=300, intermediate_size=128).save_pretrained(str(bigger))
    tokenizer.save_pretrained(str(bigger))
    [scale] = lingua_franca_evolution(None, parallel_dir, models=[str(llama_dir), str(bigger)], threshold=1.0,
                                      progress=False, device="cpu")
    assert scale.name == "scale" and scale.axis == "parameters"
    assert scale.x()[1] > scale.x()[0] == float(sum(p.numel() for p in tiny_model("llama").parameters()))
    assert [t.file for t in scale.tables()] == ["scale.csv", "scale_layers.csv"]
    assert scale.tables()[0].header[:2] == ["point", "parameters"]


def test_threshold_above_sqrt_k_minus_1_is_said(llama_dir, parallel_dir, tmp_path, capsys):
    out = tmp_path / "lf"
    assert run_cli("lingua-franca", "--model", llama_dir, "--parallel", parallel_dir, "--out", out,
                   "--no-progress", "--no-plots", "--device", "cpu") == 0
    captured = capsys.readouterr()
    assert "sqrt(K - 1) = 1.414" in captured.err and "note:" in captured.out
    assert "sqrt(K - 1)" in json.loads((out / "meta.json").read_text())["summary"]["note"]


@pytest.mark.parametrize("case", ["misaligned", "one_sample", "one_language", "bad_checkpoint", "broken_weights",
                                  "bad_percent"])
def test_bad_input_is_one_line_and_writes_nothing(case, llama_dir, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = {"misaligned": {"aa": "x y\nz\n", "bb": "x\n"}, "one_sample": {"aa": "x y\n", "bb": "z\n"},
             "one_language": {"aa": "x y\nz w\n"}}.get(case, {"aa": "x y\nz w\n", "bb": "a b\nc d\n"})
    for lang, text in texts.items():
        (corpus / f"{lang}.txt").write_text(text)
    extra = []
    if case == "bad_checkpoint":
        broken = tmp_path / "checkpoint-3"
        broken.mkdir()
        (broken / "config.json").write_text("{not json")
        extra = ["--checkpoints", broken]
    if case == "broken_weights":  # its configuration reads, its weights do not: found after the main model's work
        import shutil

        broken = tmp_path / "checkpoint-4"
        shutil.copytree(llama_dir, broken)
        (broken / "model.safetensors").write_bytes(b"not a safetensors file")
        extra = ["--checkpoints", broken]
    if case == "bad_percent":
        extra = ["--random-percent", 0]
    out = tmp_path / "lf"
    code = run_cli("lingua-franca", "--model", llama_dir, "--parallel", corpus, "--out", out, "--threshold", 0.5,
                   "--no-progress", "--device", "cpu", *extra)
    err = capsys.readouterr().err.strip()
    if case == "broken_weights":  # the main model was loaded first: keep its loading bar out of the count
        err = "\n".join(line for line in err.splitlines() if "error" in line)
    assert code == 2 and len(err.splitlines()) == 1 and "error:" in err, err
    assert {"misaligned": "not aligned", "one_sample": "at least two samples", "one_language": "two languages",
            "bad_checkpoint": "does not load", "broken_weights": "checkpoint-4' does not load",
            "bad_percent": "--random-percent"}[case] in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".lf")]
