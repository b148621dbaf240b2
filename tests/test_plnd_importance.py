"""PLND importance (Zhao et al. eqs. 4-10) against brute force: remove one neuron, rerun, take the norm of the change.

For every neuron of every layer of tiny random models (float64): the FFN neuron is zeroed at ``ffn.down_in`` and
the change of the down projection's output is measured; a value coordinate is zeroed at ``attn.v`` and the change
of the attention output before the output projection (``attn.o_in``) is measured; a query / key coordinate is
zeroed at ``attn.q`` / ``attn.k`` (pre-rotary, so the model applies its own rotary and q/k-norm) and the change of
the attention probabilities, computed in float64 from the queries and keys the model's attention receives, is
measured.
"""

from __future__ import annotations

import pytest
import torch

import langneurons as ln
from langneurons.methods.plnd import plnd_importance
from langneurons.model.sites import locate_site, site_hooks
from langneurons.testbed.tiny import tiny_model

IDS = torch.tensor([5, 17, 3, 44, 9, 23, 8])


def _model(family: str, implementation: str, **overrides) -> torch.nn.Module:
    return tiny_model(family, attn_implementation=implementation, **overrides).double()


def _probabilities(inputs) -> torch.Tensor:
    """``float64[B, H, T, T]`` attention probabilities from the captured post-rotary queries / keys, by hand:
    ``softmax(q k^T * scaling (soft-capped) + causal mask)`` (the eager path's softmax runs in float32)."""
    query, key = inputs.query.double(), inputs.key.double()
    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    scores = query @ key.transpose(-1, -2) * inputs.scaling
    if inputs.kwargs.get("softcap"):
        scores = torch.tanh(scores / inputs.kwargs["softcap"]) * inputs.kwargs["softcap"]
    t = scores.shape[-1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    return torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)


def _run(model, ids, edit=None):
    """Per layer: the down projection's output, the attention output before o_proj, the attention probabilities.

    With ``edit = (site, layer, width)`` the batch has ``width`` copies of ``ids`` and row ``k`` runs with
    neuron ``k`` of ``site`` at ``layer`` zeroed (each row is an independent rerun of the model).
    """
    down, o_in = locate_site(model, "ffn.down_in"), locate_site(model, "attn.o_in")
    ffn_out, attn_out, probs = {}, {}, {}
    hooks = [module.register_forward_hook(lambda m, a, out, _l=layer: ffn_out.__setitem__(_l, out.detach().clone()))
             for layer, module in enumerate(down.modules)]
    hooks += [module.register_forward_pre_hook(lambda m, a, _l=layer: attn_out.__setitem__(_l, a[0].detach().clone()))
              for layer, module in enumerate(o_in.modules)]
    rows = 1 if edit is None else edit[2]
    try:
        with ln.capture_attention(model, lambda layer, inputs: probs.__setitem__(layer, _probabilities(inputs))):
            if edit is None:
                model(input_ids=ids[None], use_cache=False)
            else:
                site, layer, width = edit

                def zero(_layer, tensor):
                    flat = tensor.dim() == 2  # OPT's FFN flattens [batch * seq, width]
                    tensor = tensor.clone().view(width, len(ids), -1)
                    tensor[torch.arange(width), :, torch.arange(width)] = 0  # row k: neuron k removed
                    return tensor.view(-1, tensor.shape[-1]) if flat else tensor

                with site_hooks(locate_site(model, site), zero, layers={layer}):
                    model(input_ids=ids[None].repeat(width, 1), use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    as_rows = lambda t: t.reshape(rows, len(ids), -1)  # noqa: E731
    return ({k: as_rows(v) for k, v in ffn_out.items()}, {k: as_rows(v) for k, v in attn_out.items()}, probs)


@torch.no_grad()
def brute_force(model, ids) -> dict[str, torch.Tensor]:
    geometry = ln.model_geometry(model)
    widths = {"ffn": locate_site(model, "ffn.down_in").width, **{f"attn.{p}": w for p, w in geometry.widths.items()}}
    base = _run(model, ids)
    result = {s: torch.zeros(geometry.num_layers, w, dtype=torch.float64) for s, w in widths.items()}
    for layer in range(geometry.num_layers):
        for structure, width in widths.items():
            site = "ffn.down_in" if structure == "ffn" else structure
            ffn_out, attn_out, probs = _run(model, ids, (site, layer, width))
            if structure == "ffn":
                change = ffn_out[layer] - base[0][layer]
            elif structure == "attn.v":
                change = attn_out[layer] - base[1][layer]
            else:
                change = probs[layer] - base[2][layer]
            result[structure][layer] = change.flatten(1).norm(dim=1)  # one Frobenius norm per rerun
    return result


def assert_close(mine: dict, brute: dict, rtol: float = 1e-4) -> None:
    assert set(mine) == set(brute)
    for structure, expected in brute.items():
        got = mine[structure].double()
        assert got.shape == expected.shape, structure
        assert float(expected.abs().max()) > 0, structure  # something to compare
        error = (got - expected).abs() / expected.abs().clamp_min(1e-12)
        assert float(error.max()) <= rtol, f"{structure}: max relative error {float(error.max()):.2e}"


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_importance_equals_brute_force(family):
    """llama (grouped-query, rotary), qwen2 (q/k/v biases), gpt2 (fused Conv1D c_attn, absolute positions)."""
    eager = _model(family, "eager")
    assert family == "gpt2" or ln.model_geometry(eager).num_kv_heads < ln.model_geometry(eager).num_heads
    expected = brute_force(eager, IDS)
    sdpa = _model(family, "sdpa")
    assert all(torch.equal(a, b) for a, b in zip(eager.state_dict().values(), sdpa.state_dict().values()))
    assert_close(plnd_importance(sdpa, IDS, dtype=torch.float64), expected)
    assert_close(plnd_importance(eager, IDS, dtype=torch.float64), expected)  # the eager float mask too


@pytest.mark.parametrize("family", ["qwen3", "gemma3_text", "cohere", "phi", "gpt_neox", "gemma2", "opt"])
def test_rotary_variants_and_qk_norm(family):
    """q/k-norm per head (qwen3, gemma3), interleaved rotary pairs (cohere), partial rotary (phi, and gpt_neox with
    its interleaved fused projection), attention soft-capping (gemma2), OPT's flattened FFN tensors."""
    model = _model(family, "eager")
    expected = brute_force(model, IDS[:5])
    assert_close(plnd_importance(model, IDS[:5], dtype=torch.float64), expected)


def test_chunking_changes_nothing():
    """A memory bound that forces one query row per chunk gives the same numbers as one chunk."""
    model = _model("llama", "sdpa")
    whole = plnd_importance(model, IDS, dtype=torch.float64)
    from langneurons.methods.plnd_attention import chunk_bytes, fixed_bytes

    g = ln.model_geometry(model)
    tight = fixed_bytes(g.num_heads, g.num_kv_heads, len(IDS), g.head_dim, 8, ("attn.q", "attn.k", "attn.v")) + \
        chunk_bytes(1, len(IDS), g.head_dim, g.head_dim, 8) + len(IDS) ** 2  # + the bool mask of the input
    small = plnd_importance(model, IDS, dtype=torch.float64, memory_bytes=tight)
    for structure in whole:
        torch.testing.assert_close(small[structure], whole[structure], rtol=1e-6, atol=0)
    with pytest.raises(ln.LangNeuronsError, match="below the minimum"):
        plnd_importance(model, IDS, memory_bytes=tight // 4)


def test_reference_ffn_score_is_summed_absolute_up_projection():
    model = _model("llama", "sdpa")
    captured = {}
    up = model.model.layers[1].mlp.up_proj
    handle = up.register_forward_hook(lambda m, a, out: captured.__setitem__("up", out[0].detach()))
    model(input_ids=IDS[None])
    handle.remove()
    result = plnd_importance(model, IDS, structures=("ffn",), ffn_score="reference", dtype=torch.float64)
    assert set(result) == {"ffn"}
    torch.testing.assert_close(result["ffn"][1].double(), captured["up"].abs().sum(0), rtol=1e-6, atol=1e-9)


def test_families_without_attention_capture_get_ffn_and_a_message():
    model = tiny_model("bloom")
    with pytest.warns(ln.errors.LangNeuronsWarning, match="of attn.q, attn.k, attn.v is not available") as caught:
        result = plnd_importance(model, IDS)
    assert len(caught) == 1  # one line for the attention parts
    assert set(result) == {"ffn"} and result["ffn"].shape == (2, 128)


def test_bad_input_is_one_line():
    model = tiny_model("llama")
    for bad, message in ((torch.zeros(0, dtype=torch.long), "empty"), (IDS[None].repeat(2, 1), "one input"),
                         (IDS, "unknown PLND structure")):
        with pytest.raises(ln.LangNeuronsError, match=message) as error:
            plnd_importance(model, bad, structures=("mlp",) if message.startswith("unknown") else ("ffn",))
        assert "\n" not in str(error.value)
