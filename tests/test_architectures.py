"""The architecture registry: data, discovery by aliases, validation, and registering a new family."""

from __future__ import annotations

import pytest

import langneurons as ln
from langneurons.model.architectures import architecture_table, resolve_architecture
from langneurons.model.sites import locate_site
from langneurons.testbed.tiny import TINY_CONFIGS, tiny_model


def test_every_tested_family_is_registered():
    assert set(TINY_CONFIGS) <= set(ln.registered_model_types())
    table = architecture_table()
    assert table["llama"]["ffn_act"] == "mlp.act_fn" and table["bloom"]["ffn_act"] == "mlp.gelu_impl"


def test_unregistered_model_type_is_discovered_by_aliases():
    model = tiny_model("llama", vocab_size=300)
    model.config.model_type = "some_new_llama"
    spec = resolve_architecture(model)
    assert spec.notes == "discovered" and spec.ffn_act == "mlp.act_fn" and spec.gated
    assert locate_site(model).width == 64


def test_register_architecture_for_custom_module_names():
    model = tiny_model("llama", vocab_size=300)
    model.config.model_type = "renamed_llama"
    for layer in model.model.layers:
        layer.mlp.custom_act = layer.mlp.act_fn  # the same module under a name no alias knows
        layer.mlp.custom_down = layer.mlp.down_proj
    ln.register_architecture("renamed_llama", layers="model.layers", ffn_act="mlp.custom_act",
                             ffn_down="mlp.custom_down")
    site_map = locate_site(model)
    assert site_map.describe()["module"] == "model.layers.{layer}.mlp.custom_act" and site_map.width == 64


def test_wrong_registration_fails_validation_with_the_model_type():
    model = tiny_model("llama", vocab_size=300)
    model.config.model_type = "wrong_llama"
    ln.register_architecture("wrong_llama", layers="model.layers", ffn_act="self_attn.q_proj",
                             ffn_down="mlp.down_proj")
    with pytest.raises(ln.LangNeuronsError, match="model type 'wrong_llama'.*down projection takes"):
        locate_site(model)
    with pytest.raises(ln.LangNeuronsError, match="unknown neuron site"):
        locate_site(model, "ffn.nothing")
