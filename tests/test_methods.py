"""Identification methods against hand-computed neuron sets, and the contract every method passes."""

from __future__ import annotations

import math

import pytest
import torch

import langneurons as ln
from langneurons.methods import available_methods, get_method
from langneurons.methods.entropy import language_entropy

# P[language, layer, neuron] for 3 languages, 2 layers, 5 neurons (see the comments for the expected sets).
PROBS = torch.tensor([
    # layer 0: n0 only lang0, n1 lang0+lang1, n2 flat (never above the filter), n3 low (filtered), n4 all zero
    [[0.9, 0.9, 0.5, 0.2, 0.0], [0.0, 0.1, 0.3, 0.1, 0.1]],
    [[0.0, 0.9, 0.5, 0.0, 0.0], [0.0, 0.1, 0.6, 0.1, 0.1]],
    [[0.0, 0.0, 0.5, 0.0, 0.0], [0.95, 0.1, 0.1, 0.1, 0.1]],
], dtype=torch.float64)
# Sorted, the 30 values are 10 x 0, 10 x 0.1, 0.2, 0.3, 3 x 0.5, 0.6, 3 x 0.9, 0.95:
# the 24th (ratio 0.8) is 0.5 and the 27th (ratio 0.9) is 0.9.


def stats_from_probabilities(probs: torch.Tensor, means: torch.Tensor | None = None, tokens: int = 100):
    k, layers, width = probs.shape
    positive = (probs * tokens).round().long()
    sums = (means if means is not None else probs) * tokens
    return ln.ActivationStats([f"l{i}" for i in range(k)], positive, sums.double(), (sums**2).double(),
                              torch.full((k,), tokens, dtype=torch.long), meta={"site": "ffn.act", "model": "hand"})


def as_dict(neurons: ln.NeuronSet) -> dict[str, dict[int, list[int]]]:
    return {lang: {layer: ids.tolist() for layer, ids in enumerate(neurons.layers(lang)) if ids.numel()}
            for lang in neurons.languages}


def test_entropy_matches_equation_5():
    values = torch.tensor([[0.3], [0.6], [0.1]], dtype=torch.float64).view(3, 1, 1)
    expected = -(0.3 * math.log(0.3) + 0.6 * math.log(0.6) + 0.1 * math.log(0.1))
    assert language_entropy(values).item() == pytest.approx(expected)
    zero = torch.zeros(3, 1, 1, dtype=torch.float64)
    assert language_entropy(zero).item() == 0.0  # 0/0 -> 0 and 0 log 0 = 0


def test_lape_selects_lowest_entropy_and_assigns_above_bar():
    stats = stats_from_probabilities(PROBS)
    # filter 0.5: passing neurons are L0n0 (H=0), L1n0 (H=0), L0n1 (H=log 2), L1n2 (H=0.898)
    neurons = ln.identify(stats, "lape", top_rate=0.3, filter_rate=0.8, activation_bar_ratio=0.8)
    assert as_dict(neurons) == {"l0": {0: [0, 1]}, "l1": {0: [1]}, "l2": {1: [0]}}
    assert neurons.parameters["filter_value"] == 0.5 and neurons.parameters["activation_bar"] == 0.5


def test_lape_bar_separate_from_filter():
    stats = stats_from_probabilities(PROBS)
    neurons = ln.identify(stats, "lape", top_rate=0.3, filter_rate=0.8, activation_bar_ratio=0.9)
    # bar 0.9: only 0.95 is strictly above, so selected L0n0 and L0n1 belong to no language
    assert as_dict(neurons) == {"l0": {}, "l1": {}, "l2": {1: [0]}}


def test_lape_excludes_filtered_neurons_even_with_zero_entropy():
    stats = stats_from_probabilities(PROBS)
    neurons = ln.identify(stats, "lape", top_rate=1.0, filter_rate=0.8, activation_bar_ratio=0.8)
    # L0n3 (0.2, 0, 0) and L0n4 (all zero) have entropy 0 but no probability above 0.5: never selected
    assert as_dict(neurons) == {"l0": {0: [0, 1]}, "l1": {0: [1], 1: [2]}, "l2": {1: [0]}}
    assert neurons.parameters["selected_before_assignment"] == 4


def test_lape_paper_defaults():
    method = get_method("lape")
    assert method.get_params() == {"top_rate": 0.01, "filter_rate": 0.95, "activation_bar_ratio": 0.95}


def test_lave_uses_mean_values_clamped_at_zero():
    means = PROBS.clone()
    means[1, 1, 0] = -0.3  # negative mean is clamped to 0: L1n0 stays specific to l2
    stats = stats_from_probabilities(PROBS * 0 + 0.5, means=means)
    neurons = ln.identify(stats, "lave", top_rate=0.3, filter_rate=0.8, activation_bar_ratio=0.8)
    assert as_dict(neurons) == {"l0": {0: [0, 1]}, "l1": {0: [1]}, "l2": {1: [0]}}


def test_lap_threshold_and_budget():
    stats = stats_from_probabilities(PROBS)
    neurons = ln.identify(stats, "lap", activation_threshold=0.85, top_rate=None)
    assert as_dict(neurons) == {"l0": {0: [0, 1]}, "l1": {0: [1]}, "l2": {1: [0]}}
    capped = ln.identify(stats, "lap", activation_threshold=0.85, top_rate=0.2)  # budget 2: 0.95 then first 0.9
    assert as_dict(capped) == {"l0": {0: [0]}, "l1": {}, "l2": {1: [0]}}


def test_random_is_seeded_and_sized():
    stats = stats_from_probabilities(PROBS)
    first = ln.identify(stats, "random", per_language=4, seed=3)
    again = ln.identify(stats, "random", per_language=4, seed=3)
    other = ln.identify(stats, "random", per_language=4, seed=4)
    assert first.sizes() == {"l0": 4, "l1": 4, "l2": 4}
    assert as_dict(first) == as_dict(again) and as_dict(first) != as_dict(other)
    matched = ln.random_like(ln.identify(stats, "lape", top_rate=0.3, filter_rate=0.8, activation_bar_ratio=0.8))
    assert matched.sizes() == {"l0": 2, "l1": 1, "l2": 1}


@pytest.mark.parametrize("name", available_methods())
def test_method_contract(name):
    """Every method: explicit params, fit returns self, scores_ [L, I], select is pure and well-formed."""
    torch.manual_seed(0)
    probs = torch.rand(3, 4, 50, dtype=torch.float64)
    stats = stats_from_probabilities(probs, means=probs - 0.2)
    method = get_method(name)
    assert isinstance(method.get_params(), dict) and method.get_params()
    assert method.fit(stats) is method
    assert method.scores_.shape == (4, 50)
    first, second = method.select(), method.select()
    assert as_dict(first) == as_dict(second)
    assert first.method == name and first.languages == stats.languages
    assert (first.num_layers, first.width) == (4, 50)
    assert sum(first.sizes().values()) > 0
    with pytest.raises(ln.LangNeuronsError):
        get_method(name, no_such_parameter=1)


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ln.LangNeuronsError, match="unknown method 'nope'"):
        get_method("nope")


def test_reference_masks_round_trip(tmp_path):
    stats = stats_from_probabilities(PROBS)
    neurons = ln.identify(stats, "lape", top_rate=1.0, filter_rate=0.8, activation_bar_ratio=0.8)
    masks = neurons.to_reference_masks()
    assert len(masks) == 3 and all(len(layers) == 2 for layers in masks)
    assert all(m.dtype == torch.long for layers in masks for m in layers)
    path = ln.save_reference_masks(neurons, tmp_path / "toy.neuron.pth")
    raw = torch.load(path, weights_only=True)
    assert [[t.tolist() for t in layers] for layers in raw] == [[t.tolist() for t in layers] for layers in masks]
    back = ln.load_reference_masks(path, neurons.languages, width=5)
    assert as_dict(back) == as_dict(neurons)
    rebuilt = ln.NeuronSet.from_reference_masks(masks, languages=neurons.languages, width=5)
    assert as_dict(rebuilt) == as_dict(neurons)


def test_neuron_set_save_load(tmp_path):
    stats = stats_from_probabilities(PROBS)
    neurons = ln.identify(stats, "lape", top_rate=1.0, filter_rate=0.8, activation_bar_ratio=0.8)
    neurons.save(tmp_path / "x.neurons")
    back = ln.load_neurons(tmp_path / "x.neurons")
    assert as_dict(back) == as_dict(neurons)
    assert back.method == "lape" and back.parameters["top_rate"] == 1.0 and back.source["model"] == "hand"
    with pytest.raises(ln.LangNeuronsError, match="neuron set is for 2 layers x 5 neurons"):
        back.check_shape(3, 5)
