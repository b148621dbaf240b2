"""The deactivation perplexity matrix: layout, the normal row against a direct computation."""

from __future__ import annotations

import csv
import math

import torch
import torch.nn.functional as F

import langneurons as ln
from langneurons.data.corpus import load_corpus
from langneurons.evaluation.perplexity import summary
from langneurons.testbed.tiny import tiny_model


def test_matrix_layout_and_normal_row(valid_dir, tokenizer, tmp_path):
    model = tiny_model("llama", vocab_size=300)
    packed = load_corpus(valid_dir, tokenizer, seq_len=16, max_tokens=64)
    site_map = ln.locate_site(model)
    layers = [torch.arange(0, 10), torch.arange(10, 20)]
    neurons = ln.NeuronSet({"aa": layers, "bb": [torch.arange(20, 30), torch.arange(30, 40)]},
                           site_map.num_layers, site_map.width, method="hand")
    matrix = ln.perplexity_matrix(model, packed, neurons, tokenizer=tokenizer, batch_size=3, progress=False)
    assert matrix.conditions == ["normal", "random", "aa", "bb"]
    assert matrix.languages == ["aa", "bb", "cc"]
    # the normal row: mean NLL over every predicted token, computed directly
    for c, lang in enumerate(matrix.languages):
        windows = packed.windows[lang]
        with torch.no_grad():
            logits = model(input_ids=windows).logits
        nll = F.cross_entropy(logits[:, :-1].reshape(-1, 300), windows[:, 1:].reshape(-1)).item()
        assert math.isclose(matrix.nll[0, c].item(), nll, rel_tol=1e-5)
        assert matrix.tokens[lang] == windows.shape[0] * 15
    # a deactivated row is computed under the intervention
    with ln.deactivate(model, neurons, "aa"), torch.no_grad():
        logits = model(input_ids=packed.windows["bb"]).logits
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, 300), packed.windows["bb"][:, 1:].reshape(-1)).item()
    assert math.isclose(matrix.nll[2, 1].item(), nll, rel_tol=1e-5)
    assert matrix.meta["random"]["sizes"] == {"aa": 20, "bb": 20}

    matrix.save(tmp_path / "ppl")
    with open(tmp_path / "ppl" / "perplexity.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["condition", "aa", "bb", "cc"]
    assert [row[0] for row in rows[1:]] == ["normal", "random", "aa", "bb"]
    assert math.isclose(float(rows[1][1]), math.exp(matrix.nll[0, 0].item()), rel_tol=1e-5)
    assert (tmp_path / "ppl" / "perplexity_change.png").stat().st_size > 1000
    back = ln.load_perplexity(tmp_path / "ppl")
    torch.testing.assert_close(back.nll, matrix.nll, rtol=1e-6, atol=1e-6)
    keys = summary(matrix)
    assert keys["rows"] == 2 and set(keys) >= {"mean_diagonal_increase", "mean_random_increase"}
