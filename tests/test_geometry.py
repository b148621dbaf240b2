"""Model geometry: head counts, fused q/k/v layouts, the GQA map and write vectors against the model's computation."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import langneurons as ln
from langneurons.model.architectures import get_submodule, registered_model_types
from langneurons.model.geometry import model_geometry, write_bias, write_vectors
from langneurons.model.sites import locate_site, site_hooks
from langneurons.testbed.tiny import TINY_NAMES, TINY_VARIANTS, tiny_model

#: families whose attention modules compute attention themselves (no attention interface)
SELF_ATTENDING = {"bloom", "falcon", "xglm"}
IDS = torch.tensor([[5, 17, 42, 8, 99, 23, 61]])


def model_type(name: str) -> str:
    return TINY_VARIANTS.get(name, (name, {}))[0]


def sharpen(model, factor: float = 6.0) -> None:
    """Scale the attention projections so the random model's attention is far from uniform."""
    from langneurons.model.architectures import resolve_architecture

    spec = resolve_architecture(model)
    with torch.no_grad():
        for layer in get_submodule(model, spec.layers):
            for path in (spec.attn_q, spec.attn_k, spec.attn_qkv):
                if path:
                    get_submodule(layer, path).weight.mul_(factor)


FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2", "granite",
            "cohere", "stablelm", "bloom", "gpt2", "opt", "xglm", "phi", "phi3", "gpt_neox", "falcon"]


def test_every_family_is_registered_and_has_a_tiny_model():
    assert set(FAMILIES) <= set(registered_model_types())
    assert set(FAMILIES) <= {model_type(name) for name in TINY_NAMES}


@pytest.mark.parametrize("name", TINY_NAMES)
def test_geometry_validates_and_sites_have_head_widths(name):
    model = tiny_model(name)
    geometry = model_geometry(model)
    assert geometry.attention_capture is (model_type(name) not in SELF_ATTENDING)
    assert geometry.num_heads % geometry.num_kv_heads == 0
    widths = {site: locate_site(model, site).width for site in ("attn.q", "attn.k", "attn.v", "attn.o_in")}
    assert widths == {"attn.q": geometry.num_heads * geometry.head_dim,
                      "attn.k": geometry.num_kv_heads * geometry.head_dim,
                      "attn.v": geometry.num_kv_heads * geometry.head_dim,
                      "attn.o_in": geometry.num_heads * geometry.head_dim}
    columns = geometry.qkv_columns()
    every = torch.cat([columns["q"], columns["k"], columns["v"]])
    assert torch.equal(every.sort().values, torch.arange(every.numel()))  # a partition of the fused output


def test_interleaved_split_of_a_hand_made_fused_output():
    geometry = replace(model_geometry(tiny_model("falcon_gqa")), num_heads=4, num_kv_heads=2, head_dim=3)
    # per kv group g: q heads 2g, 2g+1, then k_g, then v_g; code = 100 * part + 10 * head + coordinate
    fused = []
    for g in range(2):
        for j in range(2):
            fused += [100 * 1 + 10 * (2 * g + j) + c for c in range(3)]
        fused += [100 * 2 + 10 * g + c for c in range(3)]
        fused += [100 * 3 + 10 * g + c for c in range(3)]
    q, k, v = geometry.split_qkv(torch.tensor(fused, dtype=torch.float32))
    assert q.tolist() == [100 + 10 * h + c for h in range(4) for c in range(3)]
    assert k.tolist() == [200 + 10 * g + c for g in range(2) for c in range(3)]
    assert v.tolist() == [300 + 10 * g + c for g in range(2) for c in range(3)]
    assert [geometry.kv_head_of(h) for h in range(4)] == [0, 0, 1, 1]


def _captures(model, ids):
    """q / k / v at their sites, the o_in input, the attention module's kwargs and the model's attention weights."""
    found: dict[str, dict[int, torch.Tensor]] = {"attn.q": {}, "attn.k": {}, "attn.v": {}, "attn.o_in": {}}
    kwargs: dict[int, dict] = {}
    stack = []
    for site in found:
        stack.append(site_hooks(locate_site(model, site), lambda layer, t, site=site: found[site].__setitem__(
            layer, t.detach().clone())))
    from langneurons.model.attention import attention_modules

    handles = [module.register_forward_pre_hook(lambda m, a, kw, layer=layer: kwargs.__setitem__(layer, kw),
                                                with_kwargs=True)
               for layer, module in enumerate(attention_modules(model))]
    for context in stack:
        context.__enter__()
    try:
        with torch.no_grad():
            out = model(input_ids=ids, output_attentions=True, use_cache=False)
    finally:
        for context in stack:
            context.__exit__(None, None, None)
        for handle in handles:
            handle.remove()
    return found, kwargs, out.attentions


def _my_weights(geometry, q, k, kwargs, head_map, module):
    """softmax(q k^T / sqrt(D) + positions + causal) from the split q / k, by hand."""
    t = q.shape[1]
    qh, kh = geometry.heads(q).transpose(1, 2), geometry.heads(k).transpose(1, 2)  # B, n, T, D
    if geometry.positions and geometry.positions.startswith("rotary"):
        cos, sin = kwargs["position_embeddings"]
        qh, kh = geometry.rotate(qh, cos, sin), geometry.rotate(kh, cos, sin)
    weights = torch.empty(q.shape[0], geometry.num_heads, t, t)
    causal = torch.full((t, t), float("-inf")).triu(1)
    for h in range(geometry.num_heads):
        scores = qh[:, h] @ kh[:, head_map(h)].transpose(-1, -2) * geometry.head_dim ** -0.5
        if geometry.positions == "alibi":  # BLOOM: alibi [B * H, 1, S] added before the softmax
            scores = scores + kwargs["alibi"].view(q.shape[0], geometry.num_heads, 1, t)[:, h]
        weights[:, h] = torch.softmax(scores + causal, dim=-1)
    return weights


@pytest.mark.parametrize("name", ["llama", "qwen2", "phi3", "bloom", "gpt_neox", "gpt2", "falcon", "falcon_gqa",
                                  "falcon_mha"])
def test_qkv_split_and_gqa_map_match_the_models_attention(name):
    model = tiny_model(name, attn_implementation="eager")
    sharpen(model)
    geometry = model_geometry(model)
    found, kwargs, attentions = _captures(model, IDS)
    group = geometry.kv_group_size
    wrong_map = (lambda h: (h + 1) % geometry.num_kv_heads) if geometry.num_kv_heads > 1 else None
    for layer in range(geometry.num_layers):
        weights = attentions[layer].float()
        assert weights.max() > 0.9  # sharp enough that a wrong split shows
        q, k, v = (found[site][layer] for site in ("attn.q", "attn.k", "attn.v"))
        mine = _my_weights(geometry, q, k, kwargs[layer], geometry.kv_head_of, None)
        torch.testing.assert_close(mine, weights, rtol=1e-4, atol=1e-5)
        # the heads' outputs (the input of the output projection) are weights_h @ v[kv_head_of(h)]
        vh = geometry.heads(v).transpose(1, 2)
        o_in = geometry.heads(found["attn.o_in"][layer]).transpose(1, 2)
        for h in range(geometry.num_heads):
            torch.testing.assert_close(o_in[:, h], weights[:, h] @ vh[:, h // group], rtol=1e-4, atol=1e-6)
        if wrong_map is not None:  # the test can tell a wrong group map
            assert not torch.allclose(_my_weights(geometry, q, k, kwargs[layer], wrong_map, None), weights, atol=1e-3)
    if geometry.qkv_layout != "separate":  # and a wrong layout
        other = "concat" if geometry.qkv_layout == "interleaved" else "interleaved"
        if geometry.num_kv_heads > 1:  # with one kv head both layouts are [q_0 .. q_{H-1} | k | v]
            wrong = replace(geometry, qkv_layout=other)
            fused = locate_site(model, "attn.qkv")
            keep = {}
            with site_hooks(fused, lambda layer, t: keep.__setitem__(layer, t.clone())), torch.no_grad():
                model(input_ids=IDS, use_cache=False)
            q2, k2, _ = wrong.split_qkv(keep[0])
            assert not torch.allclose(_my_weights(wrong, q2, k2, kwargs[0], wrong.kv_head_of, None),
                                      attentions[0].float(), atol=1e-3)


def test_config_that_disagrees_with_the_weights_is_caught():
    model = tiny_model("llama")
    model.config.num_key_value_heads = 4  # the weights have 2
    with pytest.raises(ln.LangNeuronsError, match="model type 'llama'.*k_proj of layer 0 maps 32 -> 16"):
        model_geometry(model)


@pytest.mark.parametrize("name", ["llama", "gpt2", "bloom", "phi3", "falcon", "opt", "gpt_neox"])
@pytest.mark.parametrize("site", ["ffn.down_in", "attn.o_in"])
def test_write_vectors_reproduce_the_projection_output(name, site):
    model = tiny_model(name)
    spec = locate_site(model, site).spec
    path = spec.ffn_down if site == "ffn.down_in" else spec.attn_o
    for layer_index, layer in enumerate(get_submodule(model, spec.layers)):
        module = get_submodule(layer, path)
        seen = {}
        handle = module.register_forward_hook(  # clones: some families add to the output in place
            lambda m, a, out: seen.update(a=a[0].detach().clone(), y=out.detach().clone()))
        with torch.no_grad():
            model(input_ids=IDS, use_cache=False)
        handle.remove()
        vectors = write_vectors(model, site, layer_index)
        assert vectors.shape == (seen["a"].shape[-1], seen["y"].shape[-1])
        rebuilt = torch.zeros_like(seen["y"])
        for k in range(vectors.shape[0]):  # sum_k a_k v_k + bias, neuron by neuron
            rebuilt += seen["a"][..., k:k + 1] * vectors[k]
        bias = write_bias(model, site, layer_index)
        torch.testing.assert_close(rebuilt + (0 if bias is None else bias), seen["y"], rtol=1e-4, atol=1e-5)


def test_act_write_vectors_are_exact_only_for_non_gated_mlps():
    for name, exact in (("gpt2", True), ("llama", False)):
        model = tiny_model(name)
        act, down = locate_site(model, "ffn.act"), locate_site(model, "ffn.down_in")
        seen = {}
        with site_hooks(act, lambda layer, t: seen.setdefault("act", t.clone()), layers={0}), \
                site_hooks(down, lambda layer, t: seen.setdefault("down", t.clone()), layers={0}), torch.no_grad():
            model(input_ids=IDS, use_cache=False)
        vectors = write_vectors(model, "ffn.act", 0)
        assert torch.equal(vectors, write_vectors(model, "ffn.down_in", 0))
        assert torch.allclose(seen["act"] @ vectors, seen["down"] @ vectors, atol=1e-6) is exact
    with pytest.raises(ln.LangNeuronsError, match="writes nothing"):
        write_vectors(model, "attn.q", 0)


def test_fused_site_edit_scatters_back_into_the_projection():
    model = tiny_model("gpt_neox")  # interleaved per head
    geometry = model_geometry(model)
    fused_site, q_site = locate_site(model, "attn.qkv"), locate_site(model, "attn.q")
    with torch.no_grad():
        base = model(input_ids=IDS, use_cache=False).logits
        with site_hooks(q_site, lambda layer, q: q * 0.0, layers={1}):
            edited = model(input_ids=IDS, use_cache=False).logits

        def by_hand(layer, fused):  # BLOOM / NeoX: per head [q_h | k_h | v_h]
            out = fused.clone().unflatten(-1, (geometry.num_heads, 3, geometry.head_dim))
            out[..., 0, :] = 0
            return out.flatten(-3)

        with site_hooks(fused_site, by_hand, layers={1}):
            expected = model(input_ids=IDS, use_cache=False).logits
        assert torch.equal(model(input_ids=IDS, use_cache=False).logits, base)
    assert not torch.allclose(edited, base) and torch.allclose(edited, expected, atol=1e-6)


@pytest.mark.parametrize("name, layout", [("gpt_neox", "interleaved"), ("phi3", "concat"), ("gpt2", "concat")])
def test_a_discovered_fused_family_gets_its_layout_from_the_model(name, layout):
    model = tiny_model(name)
    model.config.model_type = f"unregistered_{name}"
    geometry = model_geometry(model)
    assert geometry.spec.notes == "discovered" and geometry.spec.qkv_layout is None
    assert geometry.qkv_layout == layout and geometry.final_norm is not None
    reference = model_geometry(tiny_model(name))
    assert torch.equal(geometry.qkv_columns()["k"], reference.qkv_columns()["k"])
    with pytest.raises(ln.LangNeuronsError, match="positional scheme is unknown"):
        geometry.rotary_partner(0)


@pytest.mark.parametrize("name", ["falcon", "falcon_gqa", "falcon_mha", "bloom"])
def test_split_equals_the_modules_own_head_split(name):
    """Falcon's ``_split_heads`` / BLOOM's ``_reshape`` on the fused output give the heads of our q / k / v sites."""
    model = tiny_model(name)
    geometry = model_geometry(model)
    found: dict[str, torch.Tensor] = {}
    sites = {site: locate_site(model, site) for site in ("attn.qkv", "attn.q", "attn.k", "attn.v")}
    contexts = [site_hooks(site_map, lambda layer, t, site=site: found.__setitem__(site, t.clone()), layers={1})
                for site, site_map in sites.items()]
    for context in contexts:
        context.__enter__()
    with torch.no_grad():
        model(input_ids=IDS, use_cache=False)
    for context in contexts:
        context.__exit__(None, None, None)
    module = get_submodule(get_submodule(model, geometry.layers)[1], geometry.attention)
    if hasattr(module, "_split_heads"):  # [B, T, n, D] each; Falcon-40B broadcasts k / v to every query head
        theirs = [t.reshape(*t.shape[:2], -1, geometry.head_dim) for t in module._split_heads(found["attn.qkv"])]
    else:  # BLOOM: [B, H, T, D] each
        theirs = [t.transpose(1, 2) for t in module._reshape(found["attn.qkv"])]
    q, k, v = (geometry.heads(found[site]) for site in ("attn.q", "attn.k", "attn.v"))
    assert torch.equal(q, theirs[0])
    for ours, model_heads in ((k, theirs[1]), (v, theirs[2])):
        if model_heads.shape[2] == geometry.num_heads and geometry.num_kv_heads < geometry.num_heads:
            ours = ours[:, :, [geometry.kv_head_of(h) for h in range(geometry.num_heads)]]  # query head h reads it
        assert torch.equal(ours, model_heads)
