"""The logit lens: last layer + final norm = the model's logits; chunked = unchunked; any layer by hand."""

from __future__ import annotations

import pytest
import torch

import langneurons as ln
from langneurons.model.architectures import get_submodule
from langneurons.model.geometry import model_geometry
from langneurons.model.lens import layer_logit_lens, logit_lens
from langneurons.model.sites import locate_site, site_hooks
from langneurons.testbed.tiny import tiny_model

IDS = torch.tensor([[5, 17, 42, 8, 99, 23, 61, 3], [7, 7, 31, 64, 12, 90, 4, 4]])


def hidden_states(model, ids, mask=None):
    layers: dict[int, torch.Tensor] = {}
    site = locate_site(model, "layer.out")
    with torch.no_grad(), site_hooks(site, lambda layer, t: layers.__setitem__(layer, t.clone())):
        logits = model(input_ids=ids, attention_mask=mask).logits
    return layers, logits


@pytest.mark.parametrize("name", ["llama", "gpt2", "gemma2", "cohere", "granite", "opt", "bloom", "falcon", "phi",
                                  "gpt_neox", "xglm"])
def test_last_layer_with_final_norm_is_the_models_logits(name):
    model = tiny_model(name)
    geometry = model_geometry(model)
    if name in ("gemma2", "cohere", "granite"):  # logits large enough that soft-capping / scaling shows
        with torch.no_grad():
            get_submodule(model, geometry.output_head).weight.mul_(300.0)
    layers, logits = hidden_states(model, IDS)
    ids, probs = logit_lens(model, layers[geometry.num_layers - 1], final_norm=True, top_k=5)
    expected = torch.softmax(logits.float(), dim=-1).topk(5, dim=-1)
    assert torch.equal(ids, expected.indices)
    torch.testing.assert_close(probs, expected.values, rtol=1e-5, atol=1e-7)
    if name in ("gemma2", "cohere", "granite"):  # the head's extra step matters: without it the probs differ
        head = get_submodule(model, geometry.output_head)
        norm = get_submodule(model, geometry.final_norm)
        raw = head(norm(layers[geometry.num_layers - 1])).float()
        assert not torch.allclose(raw, logits.float(), rtol=1e-2, atol=1e-3)


def test_chunked_equals_unchunked_and_any_layer_by_hand():
    model = tiny_model("llama")
    geometry = model_geometry(model)
    layers, _ = hidden_states(model, IDS)
    norm, head = get_submodule(model, geometry.final_norm), get_submodule(model, geometry.output_head)
    for final_norm in (True, False):
        whole = logit_lens(model, layers[0], final_norm=final_norm, top_k=7, chunk_size=10_000)
        for chunk in (1, 3, 5):
            ids, probs = logit_lens(model, layers[0], final_norm=final_norm, top_k=7, chunk_size=chunk)
            assert torch.equal(ids, whole[0])
            torch.testing.assert_close(probs, whole[1], rtol=1e-6, atol=1e-8)
        for b in range(IDS.shape[0]):  # one position at a time, by hand
            for t in range(IDS.shape[1]):
                x = layers[0][b, t]
                logits = head(norm(x) if final_norm else x).float()
                top = torch.softmax(logits, dim=-1).topk(7)
                assert torch.equal(whole[0][b, t], top.indices)
                torch.testing.assert_close(whole[1][b, t], top.values, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_layer_lens_under_left_padding_equals_unpadded_rows(name):
    model = tiny_model(name)
    lens = layer_logit_lens(model, IDS[:, :6], top_k=4, chunk_size=4)
    assert lens.layers == [0, 1] and lens.ids.shape == (2, 2, 6, 4)
    layers, _ = hidden_states(model, IDS[:, :6])
    for layer in (0, 1):
        direct = logit_lens(model, layers[layer], top_k=4)
        assert torch.equal(lens.ids[layer], direct[0])
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), IDS[1:, :6]], dim=1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    lens_padded = layer_logit_lens(model, padded, attention_mask=mask, layers=[1, 0], top_k=4)
    alone = layer_logit_lens(model, IDS[1:, :6], layers=[1, 0], top_k=4)
    assert lens_padded.layers == [1, 0]
    assert torch.equal(lens_padded.ids[:, :, 3:], alone.ids)
    torch.testing.assert_close(lens_padded.probs[:, :, 3:], alone.probs, rtol=1e-4, atol=1e-6)


def test_lens_errors_and_a_wrong_head_mapping_is_caught_on_load():
    model = tiny_model("llama")
    layers, _ = hidden_states(model, IDS)
    with pytest.raises(ln.LangNeuronsError, match="top_k=301 is larger than the vocabulary"):
        logit_lens(model, layers[0], top_k=301)
    with pytest.raises(ln.LangNeuronsError, match="layers must lie in 0..1"):
        layer_logit_lens(model, IDS, layers=[2])
    with pytest.raises(ln.LangNeuronsError, match="width 32"):
        logit_lens(model, layers[0][..., :16])
    wrong = tiny_model("llama")
    wrong.config.model_type = "llama_without_norm"
    ln.register_architecture("llama_without_norm", layers="model.layers", ffn_act="mlp.act_fn",
                             ffn_down="mlp.down_proj", attn_o="self_attn.o_proj", final_norm=None)
    with pytest.raises(ln.LangNeuronsError, match="'llama_without_norm': final norm None.*do not reproduce"):
        model_geometry(wrong)


@pytest.mark.parametrize("name", ["gemma2", "llama", "gpt2"])
def test_bfloat16_models_validate_and_decode_like_the_model(name):
    model = tiny_model(name).to(torch.bfloat16)
    geometry = model_geometry(model)  # the head check must allow for bfloat16 rounding of the model's own logits
    layers, logits = hidden_states(model, IDS)
    ids, probs = logit_lens(model, layers[geometry.num_layers - 1], top_k=1)
    assert probs.dtype == torch.float32
    assert (ids[..., 0] == logits.float().argmax(-1)).float().mean() > 0.9  # ties in bfloat16 may differ
