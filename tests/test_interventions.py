"""Interventions: exact zeros downstream of the site, nothing else changes, exits restore bit-identical logits."""

from __future__ import annotations

import pytest
import torch

import langneurons as ln
from langneurons.model.sites import locate_site, site_hooks
from langneurons.testbed.tiny import TINY_CONFIGS, tiny_model


def capture(model, site, ids):
    site_map = locate_site(model, site)
    seen = {}
    with site_hooks(site_map, lambda layer, t: seen.__setitem__(layer, t.detach().clone())):
        logits = model(input_ids=ids).logits
    return seen, logits


def neuron_set(model, ids_per_layer, site="ffn.act", lang="xx"):
    site_map = locate_site(model, site)
    layers = [torch.tensor(ids_per_layer.get(layer, []), dtype=torch.long) for layer in range(site_map.num_layers)]
    return ln.NeuronSet({lang: layers}, site_map.num_layers, site_map.width, site=site)


@pytest.mark.parametrize("family", ["llama", "gpt2", "bloom", "phi3"])
def test_deactivation_zeroes_only_the_chosen_neurons(family):
    model = tiny_model(family, vocab_size=300)
    ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    before, logits_before = capture(model, "ffn.down_in", ids)
    act_before, _ = capture(model, "ffn.act", ids)
    neurons = neuron_set(model, {1: [0, 5, 7]})
    with ln.deactivate(model, neurons, "xx"):
        after, logits_during = capture(model, "ffn.down_in", ids)
        act_after, _ = capture(model, "ffn.act", ids)
    # layer 0 is upstream: untouched; layer 1: the chosen neurons are 0 at the site and at W_down's input
    assert torch.equal(after[0], before[0])
    assert torch.equal(act_after[1][..., [0, 5, 7]], torch.zeros_like(act_after[1][..., [0, 5, 7]]))
    assert torch.equal(after[1][..., [0, 5, 7]], torch.zeros_like(after[1][..., [0, 5, 7]]))
    keep = [i for i in range(after[1].shape[-1]) if i not in (0, 5, 7)]
    assert torch.equal(after[1][..., keep], before[1][..., keep])
    assert torch.equal(act_after[1][..., keep], act_before[1][..., keep])
    assert not torch.equal(logits_during, logits_before)
    _, logits_after = capture(model, "ffn.act", ids)
    assert torch.equal(logits_after, logits_before)


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_empty_intervention_is_bit_identical(family):
    model = tiny_model(family, vocab_size=300)
    ids = torch.randint(3, 300, (1, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with ln.deactivate(model, neuron_set(model, {}), "xx"):
            empty = model(input_ids=ids).logits
        with ln.intervene(model, []):
            none = model(input_ids=ids).logits
    assert torch.equal(plain, empty) and torch.equal(plain, none)


def test_activate_sets_the_recorded_mean_times_strength():
    model = tiny_model("llama", vocab_size=300)
    site_map = locate_site(model, "ffn.act")
    stats = ln.ActivationStats.empty(["xx"], site_map.num_layers, site_map.width, meta={"site": "ffn.act"})
    stats.add("xx", 0, torch.randn(7, site_map.width, generator=torch.Generator().manual_seed(2)))
    stats.add("xx", 1, torch.randn(7, site_map.width, generator=torch.Generator().manual_seed(3)), count_tokens=False)
    neurons = neuron_set(model, {0: [1, 2], 1: [3]})
    ids = torch.randint(3, 300, (1, 6))
    means = stats.mean_activation()[0]
    with ln.activate(model, neurons, "xx", stats, strength=2.0):
        seen, _ = capture(model, "ffn.act", ids)
    expected0 = (means[0, [1, 2]] * 2.0).float().expand(1, 6, 2)
    assert torch.equal(seen[0][..., [1, 2]], expected0)
    assert torch.equal(seen[1][..., 3], (means[1, 3] * 2.0).float().expand(1, 6))


def test_combined_edits_and_shape_mismatch():
    model = tiny_model("llama", vocab_size=300)
    site_map = locate_site(model, "ffn.act")
    stats = ln.ActivationStats.empty(["es", "zh"], site_map.num_layers, site_map.width, meta={"site": "ffn.act"})
    stats.add("zh", 0, torch.ones(2, site_map.width) * 3)
    stats.add("es", 0, torch.ones(2, site_map.width))
    layers = {"es": [torch.tensor([4]), torch.tensor([], dtype=torch.long)],
              "zh": [torch.tensor([9]), torch.tensor([], dtype=torch.long)]}
    neurons = ln.NeuronSet(layers, site_map.num_layers, site_map.width)
    with ln.intervene(model, [ln.Deactivate(neurons, "es"), ln.Activate(neurons, "zh", stats)]):
        seen, _ = capture(model, "ffn.act", torch.randint(3, 300, (1, 5)))
    assert torch.all(seen[0][..., 4] == 0) and torch.all(seen[0][..., 9] == 3.0)
    wrong = ln.NeuronSet({"es": [torch.tensor([0])] * 3}, 3, site_map.width)
    with pytest.raises(ln.LangNeuronsError, match="neuron set is for 3 layers"):
        with ln.deactivate(model, wrong, "es"):
            pass
