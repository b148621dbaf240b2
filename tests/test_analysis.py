"""The LAPE paper's analyses: layer distribution, overlap, selection sweep, SES and dominance (and their CLI)."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import langneurons as ln
from langneurons.analysis import (
    dominance_scores,
    language_dominance,
    layer_distribution,
    mean_ses,
    neuron_overlap,
    pairwise_ses,
    selection_sweep,
    sentence_embeddings,
    sentence_similarity,
)
from langneurons.cli.main import main
from langneurons.data.corpus import load_corpus
from langneurons.testbed.tiny import tiny_model

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def hand_set() -> ln.NeuronSet:
    """3 layers x 10 neurons; aa and bb share 3 neurons, cc is disjoint, dd is empty."""
    return ln.NeuronSet({
        "aa": [[0, 1, 2], [], [7, 8]],          # 5 neurons
        "bb": [[1, 2, 3, 4], [5], [8, 9]],      # 7 neurons; aa ∩ bb = {(0,1), (0,2), (2,8)}
        "cc": [[9], [0, 1, 2], []],             # 4 neurons, disjoint from aa and bb
        "dd": [[], [], []],
    }, num_layers=3, width=10, method="hand")


def check_meta(directory: Path, kind: str) -> dict:
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["kind"] == kind and meta["schema_version"] == 1
    for entry in meta["tables"] + meta["figures"]:
        assert (directory / entry["file"]).is_file(), entry
    for entry in meta["figures"]:
        assert (directory / entry["file"]).stat().st_size > 1000
    listed = {e["file"] for e in meta["tables"] + meta["figures"]} | {"meta.json"}
    assert listed == {p.name for p in directory.iterdir()}
    return meta


# -- layer distribution --------------------------------------------------------------------------------------------
def test_layer_distribution_counts_and_csv(tmp_path):
    result = layer_distribution(hand_set())
    assert result.counts.tolist() == [[3, 0, 2], [4, 1, 2], [1, 3, 0], [0, 0, 0]]
    assert result.totals == {"aa": 5, "bb": 7, "cc": 4, "dd": 0}
    assert result.sum_row.tolist() == [8, 4, 4]
    # distinct: layer 0 {0,1,2,3,4,9}, layer 1 {0,1,2,5}, layer 2 {7,8,9}
    assert result.distinct.tolist() == [6, 4, 3]
    result.save(tmp_path / "layers")
    rows = read_csv(tmp_path / "layers" / "layers.csv")
    assert rows[0] == ["language", "0", "1", "2", "total"]
    assert rows[1:] == [["aa", "3", "0", "2", "5"], ["bb", "4", "1", "2", "7"], ["cc", "1", "3", "0", "4"],
                        ["dd", "0", "0", "0", "0"], ["sum", "8", "4", "4", "16"], ["distinct", "6", "4", "3", "13"]]
    meta = check_meta(tmp_path / "layers", "layer_distribution")
    assert meta["summary"]["totals"]["bb"] == 7 and meta["neurons"]["method"] == "hand"


# -- overlap ---------------------------------------------------------------------------------------------------------
def test_overlap_both_readings_by_hand(tmp_path):
    result = neuron_overlap(hand_set())
    langs = result.languages
    assert result.intersection.tolist() == [[5, 3, 0, 0], [3, 7, 0, 0], [0, 0, 4, 0], [0, 0, 0, 0]]
    # LAPE reading: |aa ∩ bb| / |aa ∪ bb| = 3 / 9
    assert result.value("aa", "bb") == pytest.approx(3 / 9)
    assert result.value("bb", "aa") == pytest.approx(3 / 9)
    # Zhao et al. eq. 11: overlap(x, y) = |x ∩ y| / |y|
    assert result.value("aa", "bb", "overlap_zhao") == pytest.approx(3 / 7)
    assert result.value("bb", "aa", "overlap_zhao") == pytest.approx(3 / 5)
    assert result.value("aa", "cc", "overlap_zhao") == 0.0
    assert math.isnan(result.value("aa", "dd", "overlap_zhao"))  # |dd| = 0
    assert result.value("dd", "aa", "overlap_zhao") == 0.0
    assert math.isnan(result.value("dd", "dd"))
    # brute force over Python sets
    sets = {lang: {(layer, int(i)) for layer, ids in enumerate(hand_set().layers(lang)) for i in ids} for lang in langs}
    for x, y in itertools.product(langs, langs):
        union, shared = len(sets[x] | sets[y]), len(sets[x] & sets[y])
        expected = shared / union if union else math.nan
        assert result.value(x, y) == pytest.approx(expected, nan_ok=True)
    result.save(tmp_path / "overlap")
    rows = read_csv(tmp_path / "overlap" / "overlap_zhao.csv")
    assert rows[0] == ["language", "aa", "bb", "cc", "dd"]
    assert rows[1] == ["aa", "1.000000", "0.428571", "0.000000", "nan"]
    assert read_csv(tmp_path / "overlap" / "intersection.csv")[2] == ["bb", "3", "7", "0", "0"]
    meta = check_meta(tmp_path / "overlap", "overlap")
    assert set(meta["definitions"]) == {"shared_share", "overlap_zhao"}
    assert meta["summary"]["most_shared_pair"] == "aa-bb"


# -- SES and dominance -------------------------------------------------------------------------------------------------
def brute_cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb)


def test_ses_against_a_brute_force_loop():
    torch.manual_seed(0)
    vectors = torch.randn(3, 5, 4, 6)
    pairs = pairwise_ses(vectors)
    K, S, L, _ = vectors.shape
    for a, b, layer in itertools.product(range(K), range(K), range(L)):
        expected = sum(brute_cos(vectors[a, s, layer].tolist(), vectors[b, s, layer].tolist()) for s in range(S)) / S
        assert pairs[a, b, layer].item() == pytest.approx(expected, abs=1e-9)
    curve = mean_ses(vectors)
    for layer in range(L):
        expected = (pairs[0, 1, layer] + pairs[0, 2, layer] + pairs[1, 2, layer]) / 3
        assert curve[layer].item() == pytest.approx(expected.item(), abs=1e-12)
    result = sentence_similarity(vectors, ["x", "y", "z"])
    assert result.pairs == [("x", "y"), ("x", "z"), ("y", "z")]
    torch.testing.assert_close(result.mean, curve)


def test_ses_and_dominance_by_hand(tmp_path):
    # language b is language a shifted by (2, 0): aligned cosines 1 and 1/sqrt(5)
    a = [[1.0, 0.0], [0.0, 1.0]]
    b = [[3.0, 0.0], [2.0, 1.0]]
    vectors = torch.tensor([a, b]).unsqueeze(2)  # [K=2, S=2, L=1, D=2]
    assert mean_ses(vectors).item() == pytest.approx((1 + 1 / math.sqrt(5)) / 2)
    # eq. 6 maps b onto a exactly (and a onto b), so both dominance scores are 1
    scores, by_source = dominance_scores(vectors)
    assert scores[:, 0].tolist() == pytest.approx([1.0, 1.0])
    assert math.isnan(by_source[0, 0, 0].item()) and by_source[0, 1, 0].item() == pytest.approx(1.0)
    result = language_dominance(vectors, ["a", "b"])
    result.save(tmp_path / "dominance")
    rows = read_csv(tmp_path / "dominance" / "dominance.csv")
    assert rows == [["layer", "a", "b"], ["0", "1.000000", "1.000000"]]
    assert read_csv(tmp_path / "dominance" / "dominance_pairs.csv")[1][:2] == ["a", "b"]
    check_meta(tmp_path / "dominance", "dominance")


def test_dominance_against_a_brute_force_loop():
    torch.manual_seed(1)
    vectors = torch.randn(3, 4, 2, 5) + torch.tensor([0.0, 1.0, -2.0]).view(3, 1, 1, 1)
    scores, by_source = dominance_scores(vectors)
    K, S, L, D = vectors.shape
    for c, layer in itertools.product(range(K), range(L)):
        mean = [[sum(vectors[k, s, layer, d].item() for s in range(S)) / S for d in range(D)] for k in range(K)]
        terms = []
        for k in range(K):
            if k == c:
                continue
            sims = []
            for s in range(S):
                mapped = [vectors[k, s, layer, d].item() - mean[k][d] + mean[c][d] for d in range(D)]
                sims.append(brute_cos(mapped, vectors[c, s, layer].tolist()))
            terms.append(sum(sims) / S)
            assert by_source[c, k, layer].item() == pytest.approx(terms[-1], abs=1e-9)
        assert scores[c, layer].item() == pytest.approx(sum(terms) / len(terms), abs=1e-9)


def test_ses_needs_two_languages():
    with pytest.raises(ln.LangNeuronsError, match="at least two languages"):
        pairwise_ses(torch.randn(1, 3, 2, 4))


@pytest.fixture
def parallel_dir(tmp_path):
    lines = {"aa": ["abc def", "ghij", "", "a b c d e f g", "hi"],
             "bb": ["абв где", "жзик", "а", "а б в г д", "ик"],
             "cc": ["αβγ δεζ", "ηθικ", "α", "α β γ δ", "ικ"]}
    directory = tmp_path / "parallel"
    directory.mkdir()
    for lang, rows in lines.items():
        (directory / f"{lang}.txt").write_text("\n".join(rows) + "\n")
    return directory


def test_ses_on_a_model_uses_layer_outputs(parallel_dir, tokenizer, tmp_path):
    model = tiny_model("llama", vocab_size=300)
    embeddings = sentence_embeddings(model, parallel_dir, tokenizer=tokenizer, batch_size=2, progress=False)
    assert embeddings.vectors.shape == (3, 4, 2, 32)  # the blank line (index 2) is dropped in every language
    assert embeddings.meta["corpus"]["dropped_blank"] == 1
    # sentence 2 of the result is line 3 of the files: mean of the last decoder layer's output
    ids = torch.tensor([tokenizer("α β γ δ", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    # hidden_states[-1] has the final norm applied; layer 0's output is hidden_states[1]
    torch.testing.assert_close(embeddings.language("cc")[2, 0], hidden[1][0].mean(0), rtol=1e-4, atol=1e-5)
    neurons = ln.NeuronSet({"aa": [[0, 1], [2]], "bb": [[1], []]}, 2, 64)
    result = sentence_similarity(embeddings, neurons=neurons)
    torch.testing.assert_close(result.mean, mean_ses(embeddings.vectors))
    result.save(tmp_path / "ses")
    rows = read_csv(tmp_path / "ses" / "ses.csv")
    assert rows[0] == ["layer", "mean_ses", "aa-bb", "aa-cc", "bb-cc", "neurons_sum", "neurons_distinct"]
    assert [r[-2:] for r in rows[1:]] == [["3", "2"], ["1", "1"]]
    meta = check_meta(tmp_path / "ses", "ses")
    assert meta["site"] == "layer.out" and meta["pooling"] == "mean" and meta["corpus"]["samples"] == 4
    with pytest.raises(ln.LangNeuronsError, match="neuron set has 3 layers"):
        sentence_similarity(embeddings, neurons=ln.NeuronSet({"aa": [[0]] * 3}, 3, 64))
    # saved pooled vectors (their own meta has kind "pooled_vectors") analysed later keep the analysis kind
    from langneurons.stats.pooled import load_pooled

    embeddings.save(tmp_path / "pooled")
    language_dominance(load_pooled(tmp_path / "pooled")).save(tmp_path / "dominance")
    assert check_meta(tmp_path / "dominance", "dominance")["corpus"]["samples"] == 4


# -- selection sweep ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep_setup(corpus_dir, valid_dir, tokenizer):
    model = tiny_model("llama", vocab_size=300)
    stats = ln.record(model, corpus_dir, seq_len=16, max_tokens=256, batch_size=8, tokenizer=tokenizer)
    packed = load_corpus(valid_dir, tokenizer, seq_len=16, max_tokens=64)
    return model, stats, packed


def direct_nll(model, windows: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(input_ids=windows).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1)).item()


def test_sweep_ratio_zero_is_normal_and_each_ratio_reselects(sweep_setup, tokenizer, tmp_path):
    model, stats, packed = sweep_setup
    ratios = [0.3, 0.0, 0.1]
    sweep = selection_sweep(model, packed, stats, "bb", ratios, tokenizer=tokenizer, batch_size=3, progress=False)
    assert sweep.ratios == [0.0, 0.1, 0.3] and sweep.languages == ["aa", "bb", "cc"]
    for c, lang in enumerate(sweep.languages):
        normal = direct_nll(model, packed.windows[lang])
        assert sweep.normal_nll[c].item() == pytest.approx(normal, rel=1e-5)
        assert sweep.nll[0, c].item() == pytest.approx(normal, rel=1e-5)  # ratio 0 selects nothing
    assert sweep.neurons[0] == 0
    for r, ratio in enumerate(sweep.ratios):
        selected = ln.identify(stats, "lape", top_rate=ratio)
        assert sweep.neurons[r] == selected.size("bb")
        with ln.deactivate(model, selected, "bb"):
            for c, lang in enumerate(sweep.languages):
                assert sweep.nll[r, c].item() == pytest.approx(direct_nll(model, packed.windows[lang]), rel=1e-5)
    assert sweep.neurons[-1] > 0 and not torch.allclose(sweep.nll[-1], sweep.normal_nll)
    sweep.save(tmp_path / "sweep")
    rows = read_csv(tmp_path / "sweep" / "perplexity.csv")
    assert rows[0] == ["condition", "ratio", "neurons", "aa", "bb", "cc"]
    assert [r[0] for r in rows[1:]] == ["normal", "0", "0.1", "0.3"]
    assert float(rows[2][3]) == pytest.approx(math.exp(sweep.normal_nll[0].item()), rel=1e-5)
    change = read_csv(tmp_path / "sweep" / "perplexity_change.csv")
    assert [float(v) for v in change[1][3:]] == pytest.approx([0.0, 0.0, 0.0], abs=1e-4)
    meta = check_meta(tmp_path / "sweep", "selection_sweep")
    assert meta["deactivated_language"] == "bb" and meta["method_parameters"]["filter_rate"] == 0.95


def test_sweep_bad_input(sweep_setup, tokenizer):
    model, stats, packed = sweep_setup
    with pytest.raises(ln.LangNeuronsError, match="no language 'zz'"):
        selection_sweep(model, packed, stats, "zz", [0.0], tokenizer=tokenizer, progress=False)
    with pytest.raises(ln.LangNeuronsError, match=r"must be in \[0, 1\], got 1.5"):
        selection_sweep(model, packed, stats, "aa", [0.0, 1.5], tokenizer=tokenizer, progress=False)
    with pytest.raises(ln.LangNeuronsError, match="top_rate is the swept ratio"):
        selection_sweep(model, packed, stats, "aa", [0.0], method_params={"top_rate": 0.1}, tokenizer=tokenizer)


# -- command line ----------------------------------------------------------------------------------------------------
def run_cli(*args) -> int:
    return main([str(a) for a in args])


def test_cli_layers_overlap(tmp_path, capsys):
    hand_set().save(tmp_path / "hand.neurons")
    assert run_cli("analyze", "layers", "--neurons", tmp_path / "hand.neurons", "--out", tmp_path / "layers") == 0
    assert read_csv(tmp_path / "layers" / "layers.csv")[1] == ["aa", "3", "0", "2", "5"]
    assert run_cli("analyze", "overlap", "--neurons", tmp_path / "hand.neurons", "--out", tmp_path / "ov") == 0
    assert float(read_csv(tmp_path / "ov" / "shared_share.csv")[1][2]) == pytest.approx(3 / 9, abs=1e-6)
    assert "0.333" in capsys.readouterr().out  # the printed shared-share table
    assert run_cli("analyze") == 2  # no analysis named: help, and the exit code of a user error


def test_cli_model_analyses(llama_dir, corpus_dir, valid_dir, parallel_dir, tmp_path):
    stats_dir, neurons_dir = tmp_path / "stats", tmp_path / "lape.neurons"
    assert run_cli("record", "--model", llama_dir, "--corpus", corpus_dir, "--out", stats_dir, "--seq-len", 16,
                   "--max-tokens", 128, "--no-progress") == 0
    assert run_cli("identify", "--stats", stats_dir, "--top-rate", 0.1, "--out", neurons_dir) == 0
    assert run_cli("analyze", "sweep", "--model", llama_dir, "--stats", stats_dir, "--language", "aa",
                   "--ratios", "0,0.05", "--corpus", valid_dir, "--seq-len", 16, "--max-tokens", 32,
                   "--out", tmp_path / "sweep", "--no-progress") == 0
    rows = read_csv(tmp_path / "sweep" / "perplexity.csv")
    assert [r[0] for r in rows[1:]] == ["normal", "0", "0.05"] and rows[1][3:] == rows[2][3:]
    assert run_cli("analyze", "ses", "--model", llama_dir, "--corpus", parallel_dir, "--neurons", neurons_dir,
                   "--out", tmp_path / "ses", "--no-progress") == 0
    assert len(read_csv(tmp_path / "ses" / "ses.csv")) == 3
    assert run_cli("analyze", "dominance", "--model", llama_dir, "--corpus", parallel_dir, "--langs", "aa,cc",
                   "--max-samples", 2, "--out", tmp_path / "dom", "--no-progress") == 0
    meta = check_meta(tmp_path / "dom", "dominance")
    assert read_csv(tmp_path / "dom" / "dominance.csv")[0] == ["layer", "aa", "cc"]
    assert meta["corpus"]["samples"] == 2 and meta["model"] == str(llama_dir)


@pytest.mark.parametrize("case", ["misaligned", "one language", "ratios", "sweep language", "bad neurons",
                                  "ses layers"])
def test_cli_errors_are_one_line_and_write_nothing(case, llama_dir, tmp_path, capsys):
    misaligned = tmp_path / "misaligned"
    misaligned.mkdir()
    (misaligned / "aa.txt").write_text("one\ntwo\nthree\n")
    (misaligned / "bb.txt").write_text("one\ntwo\n")
    out = tmp_path / "out"
    stats = ln.ActivationStats.empty(["aa"], 2, 64)
    stats.save(tmp_path / "stats")
    ln.NeuronSet({"aa": [[0]] * 3}, 3, 64).save(tmp_path / "three.neurons")
    (tmp_path / "parallel").mkdir()
    for lang in ("aa", "bb"):
        (tmp_path / "parallel" / f"{lang}.txt").write_text("abc\ndef\n")
    args, message = {
        "misaligned": (["analyze", "ses", "--model", llama_dir, "--corpus", misaligned],
                       r"not aligned: line counts differ \(aa.txt 3, bb.txt 2\)"),
        "one language": (["analyze", "dominance", "--model", llama_dir, "--corpus", misaligned, "--langs", "aa"],
                         "needs at least two languages"),
        "ratios": (["analyze", "sweep", "--model", llama_dir, "--stats", tmp_path / "stats", "--language", "aa",
                    "--corpus", misaligned, "--ratios", "0,abc"], "--ratios must be comma-separated numbers"),
        "sweep language": (["analyze", "sweep", "--model", llama_dir, "--stats", tmp_path / "stats", "--language",
                            "zz", "--corpus", misaligned], "--stats '.*stats' has no language 'zz'"),
        "bad neurons": (["analyze", "layers", "--neurons", tmp_path / "nothing"], "is not a langneurons"),
        "ses layers": (["analyze", "ses", "--model", llama_dir, "--corpus", tmp_path / "parallel", "--neurons",
                        tmp_path / "three.neurons", "--no-progress"],
                       "--neurons '.*three.neurons' has 3 layers but --model"),
    }[case]
    assert run_cli(*args, "--out", out) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if "Loading weights" not in line]
    assert len(lines) == 1 and lines[0].startswith("langneurons analyze: error:"), lines  # (model loading bar aside)
    err = lines[0]
    import re

    assert re.search(message, err), err
    assert not out.exists()


@pytest.mark.skipif(not (SHARED_DATA / "bible" / "en.txt").exists(), reason="shared data not available")
def test_ses_on_real_parallel_text(llama_dir, tmp_path):
    """The Bible verses (line-aligned) through the whole SES / dominance path on a tiny model."""
    corpus = SHARED_DATA / "bible"
    assert run_cli("analyze", "ses", "--model", llama_dir, "--corpus", corpus, "--langs", "en,fr,zh",
                   "--max-samples", 6, "--max-length", 64, "--out", tmp_path / "ses", "--no-progress") == 0
    meta = check_meta(tmp_path / "ses", "ses")
    assert meta["corpus"]["samples"] == 6 and set(meta["corpus"]["files"]) == {"en", "fr", "zh"}
    rows = read_csv(tmp_path / "ses" / "ses.csv")
    assert rows[0][:5] == ["layer", "mean_ses", "en-fr", "en-zh", "fr-zh"]
    assert all(-1.0 <= float(v) <= 1.0 for row in rows[1:] for v in row[1:])
