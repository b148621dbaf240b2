"""Attention capture: post-rotary q / k, v and the mask as the model uses them, SDPA and eager, outputs unchanged."""

from __future__ import annotations

import pytest
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import langneurons as ln
from langneurons.model.attention import capture_attention, supports_attention_capture
from langneurons.model.geometry import model_geometry
from langneurons.model.sites import locate_site, site_hooks
from langneurons.testbed.tiny import tiny_model

IDS = torch.tensor([[5, 17, 42, 8, 99, 23], [7, 7, 31, 64, 12, 90]])
LEFT_MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])


def sharpen(model, factor: float = 6.0) -> None:
    from langneurons.model.architectures import get_submodule, resolve_architecture

    spec = resolve_architecture(model)
    with torch.no_grad():
        for layer in get_submodule(model, spec.layers):
            for path in (spec.attn_q, spec.attn_k, spec.attn_qkv):
                if path:
                    get_submodule(layer, path).weight.mul_(factor)


def collect(model, layers=None):
    captured: dict[int, list] = {}
    return captured, capture_attention(model, lambda layer, inputs: captured.setdefault(layer, []).append(inputs),
                                       layers=layers)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("name", ["llama", "gpt2", "gpt_neox", "phi3", "qwen3", "opt", "cohere"])
def test_capture_leaves_logits_bit_identical_and_restores_the_interface(name, implementation):
    model = tiny_model(name, attn_implementation=implementation)
    before = dict(getattr(ALL_ATTENTION_FUNCTIONS, "_local_mapping", {}))
    with torch.no_grad():
        for mask in (None, LEFT_MASK):
            base = model(input_ids=IDS, attention_mask=mask).logits
            captured, context = collect(model)
            with context:
                inside = model(input_ids=IDS, attention_mask=mask).logits
            assert torch.equal(inside, base)
            assert sorted(captured) == list(range(model.config.num_hidden_layers))
            assert all(len(calls) == 1 for calls in captured.values())
    assert dict(getattr(ALL_ATTENTION_FUNCTIONS, "_local_mapping", {})) == before
    assert "eager" not in ALL_ATTENTION_FUNCTIONS or implementation != "eager" or "eager" in before


@pytest.mark.parametrize("name", ["llama", "qwen2", "phi3", "gpt_neox", "gpt2", "gemma2"])
def test_captured_softmax_equals_the_models_attention_weights(name):
    model = tiny_model(name, attn_implementation="eager")
    sharpen(model)
    captured, context = collect(model)
    with torch.no_grad(), context:
        out = model(input_ids=IDS, attention_mask=LEFT_MASK, output_attentions=True)
    for layer, weights in enumerate(out.attentions):
        inputs = captured[layer][0]
        assert inputs.attention_mask is not None and inputs.attention_mask.dtype != torch.bool  # eager: additive
        mine = inputs.attention_weights()
        real = LEFT_MASK.bool()[:, None, :, None]  # padded query rows are not compared
        assert weights.max() > 0.9
        torch.testing.assert_close(mine * real, weights.float() * real, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["llama", "qwen2", "phi3", "gpt_neox", "gpt2"])
@pytest.mark.parametrize("mask", [None, LEFT_MASK])
def test_sdpa_inputs_reproduce_the_heads_output(name, mask):
    """Under SDPA (mask None = causal only, or bool), softmax(q k^T * s + mask) @ v[kv_head_of(h)] is the o_in input."""
    model = tiny_model(name, attn_implementation="sdpa")
    sharpen(model)
    geometry = model_geometry(model)
    o_in: dict[int, torch.Tensor] = {}
    site = locate_site(model, "attn.o_in")  # before the capture opens: locating runs a check forward pass
    captured, context = collect(model)
    with torch.no_grad(), context, site_hooks(site, lambda layer, t: o_in.__setitem__(layer, t.clone())):
        model(input_ids=IDS, attention_mask=mask)
    real = torch.ones_like(IDS, dtype=torch.bool) if mask is None else mask.bool()
    for layer in range(geometry.num_layers):
        inputs = captured[layer][0]
        assert (inputs.attention_mask is None) == (mask is None)
        assert inputs.query.shape == (2, geometry.num_heads, 6, geometry.head_dim)
        assert inputs.key.shape == inputs.value.shape == (2, geometry.num_kv_heads, 6, geometry.head_dim)
        weights = inputs.attention_weights()
        heads = geometry.heads(o_in[layer]).transpose(1, 2)
        for h in range(geometry.num_heads):
            expected = weights[:, h] @ inputs.value[:, geometry.kv_head_of(h)].float()
            torch.testing.assert_close(heads[:, h][real], expected[real], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["llama", "cohere", "gpt_neox", "phi", "stablelm", "phi3", "gemma"])
def test_rotary_info_and_the_pair_a_removed_coordinate_changes(name):
    """rotate(pre-rotary q, cos, sin) is the captured query; zeroing coordinate c changes only c and its partner."""
    model = tiny_model(name)
    geometry = model_geometry(model)
    pre: dict[int, torch.Tensor] = {}
    q_site = locate_site(model, "attn.q")
    captured, context = collect(model, layers={0})
    with torch.no_grad(), context, site_hooks(q_site, lambda layer, t: pre.setdefault(layer, t), layers={0}):
        model(input_ids=IDS)
    inputs = captured[0][0]
    rotated = geometry.rotate(geometry.heads(pre[0]).transpose(1, 2), inputs.cos, inputs.sin)
    torch.testing.assert_close(rotated, inputs.query, rtol=1e-5, atol=1e-6)
    for c in sorted({0, 1, geometry.rotary_dim - 1, geometry.head_dim - 1}):
        def zero(layer, q, c=c):
            q = q.clone()
            q.view(*q.shape[:-1], geometry.num_heads, geometry.head_dim)[..., c] = 0
            return q

        again, context = collect(model, layers={0})
        with torch.no_grad(), context, site_hooks(q_site, zero, layers={0}):
            model(input_ids=IDS)
        changed = (again[0][0].query - inputs.query).abs().amax(dim=(0, 1, 2)) > 0
        partner = geometry.rotary_partner(c)
        assert changed.nonzero().flatten().tolist() == sorted({c} | ({partner} if partner is not None else set()))


def test_capture_with_kv_cache_during_generation_sees_cached_keys():
    model = tiny_model("llama")
    lengths = []
    captured, context = collect(model, layers={1})
    with torch.no_grad():
        plain = model.generate(IDS[:1], max_new_tokens=3, do_sample=False)
        with context:
            inside = model.generate(IDS[:1], max_new_tokens=3, do_sample=False)
    for inputs in captured[1]:
        lengths.append((inputs.query.shape[2], inputs.key.shape[2]))
    assert torch.equal(plain, inside)
    assert lengths == [(6, 6), (1, 7), (1, 8)]
    step = captured[1][1]  # one new query against 7 keys: mask None means it sees them all
    assert torch.equal(step.additive_mask(), torch.zeros(1, 1, 1, 7))


def test_nested_captures_and_layer_filter():
    model = tiny_model("qwen2")
    outer, outer_context = collect(model)
    inner, inner_context = collect(model, layers={1})
    with torch.no_grad(), outer_context:
        with inner_context:
            model(input_ids=IDS)
        model(input_ids=IDS)
    assert sorted(inner) == [1] and len(inner[1]) == 1
    assert [len(outer[layer]) for layer in (0, 1)] == [2, 2]
    assert torch.equal(inner[1][0].query, outer[1][0].query)


@pytest.mark.parametrize("name", ["bloom", "falcon", "xglm"])
def test_families_that_compute_attention_themselves_say_so(name):
    model = tiny_model(name)
    assert not supports_attention_capture(model)
    with pytest.raises(ln.LangNeuronsError, match=f"model type '{name}' computes attention itself.*FFN sites are"):
        with capture_attention(model, lambda layer, inputs: None):
            pass


def test_a_path_that_bypasses_the_interface_is_detected():
    model = tiny_model("gpt2", attn_implementation="eager", reorder_and_upcast_attn=True)
    assert not supports_attention_capture(model)
    assert supports_attention_capture(tiny_model("gpt2", attn_implementation="eager"))


@pytest.mark.parametrize("name", ["llama", "cohere", "gpt_neox"])
def test_score_change_of_a_removed_coordinate_is_the_relative_rotation_of_docs(name):
    """docs/geometry.md: removing pre-rotary q_i removes q_t[i] (R((s-t)θ) k_s)[i]; k_i: k_s[i] (R((t-s)θ) q_t)[i]."""
    model = tiny_model(name)
    geometry = model_geometry(model)
    sites = {part: locate_site(model, f"attn.{part}") for part in ("q", "k")}
    pre, captured = {}, {}
    with torch.no_grad(), capture_attention(model, lambda layer, a: captured.setdefault(layer, a), layers={0}), \
            site_hooks(sites["q"], lambda layer, t: pre.setdefault("q", t), layers={0}), \
            site_hooks(sites["k"], lambda layer, t: pre.setdefault("k", t), layers={0}):
        model(input_ids=IDS[:1])
    inputs = captured[0]
    q = geometry.heads(pre["q"]).transpose(1, 2)[0, 0]  # T, D (head 0 reads kv head 0)
    k = geometry.heads(pre["k"]).transpose(1, 2)[0, 0]
    cos, sin = inputs.cos[0], inputs.sin[0]  # T, rotary_dim: cos(t θ), sin(t θ)
    cos_phi = cos[None, :, :] * cos[:, None, :] + sin[None, :, :] * sin[:, None, :]  # [t, s]: cos((s - t) θ)
    sin_phi = sin[None, :, :] * cos[:, None, :] - cos[None, :, :] * sin[:, None, :]

    def score(qq, kk):
        return geometry.rotate(qq[None, None], inputs.cos[:1], inputs.sin[:1])[0, 0] @ \
            geometry.rotate(kk[None, None], inputs.cos[:1], inputs.sin[:1])[0, 0].T

    full = score(q, k)
    torch.testing.assert_close(full, inputs.query[0, 0] @ inputs.key[0, 0].T, rtol=1e-5, atol=1e-7)
    for i in range(geometry.head_dim):
        j = geometry.rotary_partner(i)
        cut_q, cut_k = q.clone(), k.clone()
        cut_q[:, i], cut_k[:, i] = 0, 0
        if j is None:
            want_q = want_k = q[:, i:i + 1] * k[None, :, i]
        else:
            sign = 1.0 if i < j else -1.0  # first or second coordinate of its pair
            c, s = cos_phi[..., i], sin_phi[..., i]
            want_q = q[:, i:i + 1] * (k[None, :, i] * c - sign * k[None, :, j] * s)
            want_k = k[None, :, i] * (q[:, i:i + 1] * c + sign * q[:, j:j + 1] * s)
        torch.testing.assert_close(full - score(cut_q, k), want_q, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(full - score(q, cut_k), want_k, rtol=1e-4, atol=1e-7)
