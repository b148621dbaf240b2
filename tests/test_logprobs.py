"""Chunked LM head: the NLL and token log-probabilities equal the ones from the model's full logits."""

from __future__ import annotations

import warnings

import pytest
import torch

from langneurons.data.batching import forward_kwargs, pad_rows
from langneurons.errors import LangNeuronsWarning
from langneurons.evaluation.logprobs import head_path, sequence_nll, token_logprobs, token_scores
from langneurons.evaluation.perplexity import corpus_nll
from langneurons.testbed.tiny import tiny_model

FAMILIES = ["llama", "gpt2", "gemma2", "opt", "bloom", "qwen2", "phi", "falcon", "xglm", "gpt_neox"]


def brute_nll(model, rows: list[list[int]]) -> list[tuple[float, int]]:
    """Each row alone, unpadded: the model's full logits, log_softmax, the next token's log-probability."""
    out = []
    for row in rows:
        ids = torch.tensor([row])
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        total = -sum(float(logp[t - 1, row[t]]) for t in range(1, len(row)))
        out.append((total, len(row) - 1))
    return out


def check_padded(family: str, dtype: torch.dtype, side: str, tol: float) -> None:
    model = tiny_model(family).to(dtype)
    generator = torch.Generator().manual_seed(1)
    rows = [torch.randint(3, 300, (n,), generator=generator).tolist() for n in (9, 5, 12, 2)]
    input_ids, mask = pad_rows(rows, pad_id=0, side=side)
    nll, count = sequence_nll(model, input_ids, mask, chunk_size=4)
    for i, (total, n) in enumerate(brute_nll(model, rows)):
        assert int(count[i]) == n
        assert abs(float(nll[i]) - total) <= tol * max(1.0, abs(total)), (family, side, i)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("side", ["right", "left"])
def test_chunked_nll_equals_full_logits_with_padding(family, side):
    check_padded(family, torch.float32, side, 1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_chunked_nll_exact_in_float64(family, side):
    """In float64 the two paths agree to rounding (eager float64 masks of some families give NaN under left
    padding inside transformers itself, hence float32 above)."""
    check_padded(family, torch.float64, side, 1e-10)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_corpus_nll_chunked_equals_unchunked(family):
    model = tiny_model(family).double()
    windows = torch.randint(3, 300, (5, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(input_ids=windows).logits
    full = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 300), windows[:, 1:].reshape(-1),
                                             reduction="sum")
    for chunk in (1, 7, None):
        total, count = corpus_nll(model, windows, batch_size=2, chunk_size=chunk)
        assert count == 5 * 15
        assert abs(total - float(full)) <= 1e-9 * abs(float(full))


def test_token_logprobs_and_greedy_match_the_logits():
    model = tiny_model("llama").double()
    rows = [[5, 9, 14, 20, 7], [8, 3, 11]]
    input_ids, mask = pad_rows(rows, pad_id=0, side="right")
    wanted = torch.zeros_like(mask, dtype=torch.bool)
    wanted[0, 3:5] = True  # the last two tokens of row 0
    wanted[1, 1] = True
    scores = token_scores(model, input_ids, mask, wanted, chunk_size=2)
    for b, row in enumerate(rows):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([row])).logits[0]
        logp = torch.log_softmax(logits, -1)
        for t in range(input_ids.shape[1]):
            if wanted[b, t]:
                assert abs(float(scores.logprobs[b, t]) - float(logp[t - 1, row[t]])) < 1e-10
                assert bool(scores.greedy[b, t]) == (int(logits[t - 1].argmax()) == row[t])
            else:
                assert float(scores.logprobs[b, t]) == 0.0 and not bool(scores.greedy[b, t])
    # a target that IS the argmax is reported as greedy
    with torch.no_grad():
        best = int(model(input_ids=torch.tensor([[5, 9]])).logits[0, -1].argmax())
    hit = token_scores(model, torch.tensor([[5, 9, best]]), None, torch.tensor([[False, False, True]]))
    assert bool(hit.greedy[0, 2])
    with pytest.raises(ValueError):
        token_logprobs(model, input_ids, mask, torch.ones_like(wanted))


def test_head_path_uses_the_family_transform():
    model = tiny_model("gemma2").double()
    assert model.config.final_logit_softcapping  # gemma2 caps its logits: the path must apply it
    path = head_path(model)
    assert path.chunked and path.transforms == (("softcap", float(model.config.final_logit_softcapping)),)


def test_unknown_head_transform_falls_back_to_full_logits():
    """A model whose config claims a transform its forward does not apply: the 4-token check catches it."""
    model = tiny_model("llama").double()
    model.config.logit_scale = 3.0  # llama ignores it; our table would multiply by it
    with pytest.warns(LangNeuronsWarning, match="full logits"):
        path = head_path(model)
    assert not path.chunked
    rows = [[4, 9, 17, 3, 22], [6, 12]]
    input_ids, mask = pad_rows(rows, pad_id=0, side="left")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cached: warned once
        nll, _ = sequence_nll(model, input_ids, mask, chunk_size=3)
    for i, (total, _) in enumerate(brute_nll(model, rows)):
        assert abs(float(nll[i]) - total) < 1e-9 * max(1.0, abs(total))


def test_nll_runs_inside_interventions():
    """The body path sees hooks exactly as the full forward does."""
    import langneurons as ln

    model = tiny_model("llama").double()
    site_map = ln.locate_site(model)
    neurons = ln.NeuronSet({"aa": [torch.arange(0, 30), torch.arange(5, 40)]}, site_map.num_layers, site_map.width)
    ids = torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(3))
    normal, _ = sequence_nll(model, ids)
    with ln.deactivate(model, neurons, "aa"):
        edited, _ = sequence_nll(model, ids)
        with torch.no_grad():
            logits = model(input_ids=ids, **forward_kwargs(model, None)).logits.double()
    by_hand = -torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0].sum(-1)
    torch.testing.assert_close(edited, by_hand, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(edited, normal)
