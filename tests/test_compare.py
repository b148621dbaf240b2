"""Comparing methods' neuron sets: sizes, pairwise Jaccard per language and over all, layer distributions."""

from __future__ import annotations

import csv
import itertools
import json
import math

import pytest
import torch

import langneurons as ln
from langneurons.analysis.compare import compare_neuron_sets, default_names
from langneurons.cli.main import main


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def hand_sets() -> dict[str, ln.NeuronSet]:
    """Three sets on 2 layers x 8 neurons; ``b`` lacks language ``cc`` (so ``cc`` is not compared)."""
    a = ln.NeuronSet({"aa": [[0, 1, 2], [3]], "bb": [[4], [4, 5]], "cc": [[7], []]}, 2, 8, method="lape")
    b = ln.NeuronSet({"aa": [[1, 2], [3, 6]], "bb": [[], [5]]}, 2, 8, method="lap",
                     parameters={"top_rate": 0.1})
    c = ln.NeuronSet({"bb": [[0], []], "aa": [[], []]}, 2, 8, method="random")
    return {"a": a, "b": b, "c": c}


def brute_jaccard(first: ln.NeuronSet, second: ln.NeuronSet, langs: list[str]) -> tuple[int, int, int, float]:
    def pairs(neurons):
        return {(layer, int(i)) for lang in langs for layer, ids in enumerate(neurons.layers(lang)) for i in ids}

    x, y = pairs(first), pairs(second)
    union = len(x | y)
    return len(x), len(y), len(x & y), (len(x & y) / union if union else math.nan)


def test_jaccard_sizes_and_layers_by_hand(tmp_path):
    sets = hand_sets()
    result = compare_neuron_sets(sets)
    assert result.names == ["a", "b", "c"] and result.languages == ["aa", "bb"]
    assert result.meta["skipped_languages"] == {"a": ["cc"]}
    # hand-computed: aa: a={0,1,2 | 3}, b={1,2 | 3,6} -> shared 3, union 5
    assert result.jaccard("a", "b", "aa") == pytest.approx(3 / 5)
    # bb: a={(0,4),(1,4),(1,5)}, b={(1,5)} -> 1 / 3
    assert result.jaccard("b", "a", "bb") == pytest.approx(1 / 3)
    # all (aa ∪ bb): a has 7, b has 5, shared 4 -> 4 / 8
    assert result.jaccard("a", "b", "all") == pytest.approx(4 / 8)
    assert result.jaccard("b", "c", "aa") == 0.0  # c has no aa neurons
    assert result.sizes == {"a": {"aa": 4, "bb": 3, "all": 7}, "b": {"aa": 4, "bb": 1, "all": 5},
                            "c": {"aa": 0, "bb": 1, "all": 1}}
    for pair in result.pairs:
        langs = result.languages if pair.language == "all" else [pair.language]
        expected = brute_jaccard(sets[pair.first], sets[pair.second], langs)
        assert (pair.size_first, pair.size_second, pair.intersection) == expected[:3]
        assert pair.jaccard == pytest.approx(expected[3], nan_ok=True)
    assert result.layer_counts["a"].tolist() == [[3, 1], [1, 2]]
    assert result.layer_counts["b"].tolist() == [[2, 2], [0, 1]]

    result.save(tmp_path / "cmp")
    out = tmp_path / "cmp"
    assert read_csv(out / "sizes.csv") == [["language", "a", "b", "c"], ["aa", "4", "4", "0"], ["bb", "3", "1", "1"],
                                           ["all", "7", "5", "1"]]
    rows = read_csv(out / "jaccard.csv")
    assert rows[0] == ["language", "set_a", "set_b", "size_a", "size_b", "intersection", "union", "jaccard"]
    assert rows[1] == ["aa", "a", "b", "4", "4", "3", "5", "0.600000"]
    assert len(rows) == 1 + 3 * 3  # (aa, bb, all) x 3 pairs
    layers = read_csv(out / "layers.csv")
    assert layers[0] == ["set", "language", "0", "1", "total"]
    assert layers[1:4] == [["a", "aa", "3", "1", "4"], ["b", "aa", "2", "2", "4"], ["c", "aa", "0", "0", "0"]]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "method_comparison"
    files = {e["file"] for e in meta["tables"] + meta["figures"]}
    assert files == {"sizes.csv", "jaccard.csv", "layers.csv", "jaccard.png", "layers.png"}
    assert files | {"meta.json"} == {p.name for p in out.iterdir()}
    assert meta["sets"]["b"]["parameters"] == {"top_rate": 0.1}
    assert meta["summary"]["jaccard_all"]["a vs b"] == pytest.approx(0.5)


def test_identical_and_disjoint_sets():
    torch.manual_seed(0)
    one = ln.NeuronSet({"aa": [torch.randperm(50)[:10], torch.randperm(50)[:7]]}, 2, 50)
    empty = ln.NeuronSet({"aa": [[], []]}, 2, 50)
    result = compare_neuron_sets({"x": one, "y": one, "z": empty, "w": empty})
    assert result.jaccard("x", "y", "aa") == 1.0
    assert result.jaccard("x", "z", "aa") == 0.0
    assert math.isnan(result.jaccard("z", "w", "aa"))  # both empty: undefined
    assert len(result.pairs) == 2 * len(list(itertools.combinations("xyzw", 2)))


def test_errors():
    a = hand_sets()["a"]
    with pytest.raises(ln.LangNeuronsError, match="at least two neuron sets"):
        compare_neuron_sets({"a": a})
    with pytest.raises(ln.LangNeuronsError, match="not on the same neuron grid"):
        compare_neuron_sets({"a": a, "wide": ln.NeuronSet({"aa": [[0], [0]]}, 2, 9)})
    with pytest.raises(ln.LangNeuronsError, match="not on the same neuron grid"):
        compare_neuron_sets({"a": a, "site": ln.NeuronSet({"aa": [[0], [0]]}, 2, 8, site="ffn.down_in")})
    with pytest.raises(ln.LangNeuronsError, match="no language in common"):
        compare_neuron_sets({"a": a, "zz": ln.NeuronSet({"zz": [[0], [0]]}, 2, 8)})


def test_default_names():
    assert default_names(["runs/x/lape.neurons", "runs/y/lape.neurons/", "lap", ".neurons"]) == [
        "lape", "lape_2", "lap", ".neurons"]


def test_cli(tmp_path, capsys):
    paths = []
    for name, neurons in hand_sets().items():
        paths.append(tmp_path / f"{name}.neurons")
        neurons.save(paths[-1])
    assert main(["compare", *map(str, paths), "--out", str(tmp_path / "cmp")]) == 0
    assert "Jaccard a vs b (all languages): 0.500" in capsys.readouterr().out
    assert read_csv(tmp_path / "cmp" / "sizes.csv")[0] == ["language", "a", "b", "c"]
    assert main(["compare", str(paths[0]), str(paths[1]), "--names", "LAPE,LAP", "--out", str(tmp_path / "n")]) == 0
    assert read_csv(tmp_path / "n" / "sizes.csv")[0] == ["language", "LAPE", "LAP"]
    # errors: one line, exit 2, nothing written
    for args, message in [
        ([str(paths[0])], "at least two neuron sets"),
        ([str(paths[0]), str(paths[1]), "--names", "x"], "--names needs 2 distinct"),
        ([str(paths[0]), str(tmp_path / "missing")], "is not a langneurons neuron_set"),
    ]:
        capsys.readouterr()
        assert main(["compare", *args, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not (tmp_path / "bad").exists()
