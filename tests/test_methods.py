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


def contract_stats():
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 4, 50, dtype=torch.float64, generator=generator)
    return stats_from_probabilities(probs, means=probs - 0.2)


def contract_models():
    """A base and three "fine-tuned" state dicts: each language moved every entry by its own random amount."""
    from langneurons.methods.parameter_variation import ParameterChanges

    generator = torch.Generator().manual_seed(0)
    shapes = {f"layers.{i}.w": (16, 16) for i in range(3)}
    base = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    tuned = {lang: {name: w + torch.randn(w.shape, generator=generator) * torch.rand(w.shape, generator=generator)
                    for name, w in base.items()} for lang in ("l0", "l1", "l2")}
    return ParameterChanges(base, tuned, parameters=shapes)


def contract_pooled():
    """Per-sample vectors [6 languages, 5 samples, 4 layers, 50] (standard normal, so some are negative, as the
    neuron types need): neuron 7k of layer k % 4 fires in language k only (as key regions need). Mode "last"."""
    from langneurons.stats.pooled import PooledVectors

    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(6, 5, 4, 50, generator=generator)
    for k in range(6):
        vectors[k, :, k % 4, 7 * k] += 3.0
    return PooledVectors([f"l{k}" for k in range(6)], vectors, mode="last",
                         meta={"site": "ffn.act", "model": "hand"})


def contract_importance():
    """PLND importance of 3 inputs per language: each language has 10 neurons far above the rest in every input."""
    from langneurons.stats.importance import ImportanceStats

    generator = torch.Generator().manual_seed(0)
    stats = ImportanceStats(["l0", "l1", "l2"], {"ffn": (4, 50)}, meta={"model": "hand"})
    base = torch.rand(4, 50, generator=generator)
    for k, lang in enumerate(stats.languages):
        boost = torch.zeros(4, 50)
        boost[:, 10 * k:10 * k + 10] = 5.0
        for _ in range(3):
            stats.add(lang, {"ffn": base + boost + 0.01 * torch.rand(4, 50, generator=generator)}, tokens=7)
    return stats


#: what each kind of method input looks like in the contract test; a method consuming something new adds one
CONTRACT_DATA = {"activation_stats": contract_stats, "models": contract_models, "pooled_vectors": contract_pooled,
                 "importance": contract_importance}


def canonical(result) -> dict:
    """A comparable view of a neuron set or parameter set."""
    if isinstance(result, ln.NeuronSet):
        return as_dict(result)
    return {lang: {name: ids.tolist() for name, ids in result.indices(lang).items()} for lang in result.languages}


def fingerprint(value, depth: int = 0, seen: set | None = None) -> list:
    """Every tensor (cloned) and scalar reachable from ``value`` (attributes, dicts, lists), for a no-mutation check."""
    seen = set() if seen is None else seen
    if isinstance(value, torch.Tensor):
        return [value.detach().clone()]
    if isinstance(value, (int, float, str, bool, type(None))):
        return [value]
    if id(value) in seen or depth > 4:
        return []
    seen.add(id(value))
    if isinstance(value, dict):
        return [item for key in sorted(value, key=str) for item in [key, *fingerprint(value[key], depth + 1, seen)]]
    if isinstance(value, (list, tuple)):
        return [item for v in value for item in fingerprint(v, depth + 1, seen)]
    if hasattr(value, "__dict__"):
        return fingerprint(vars(value), depth + 1, seen)
    return []


def same(first: list, second: list) -> bool:
    return len(first) == len(second) and all(
        (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b))
        or (not isinstance(a, torch.Tensor) and a == b) for a, b in zip(first, second))


@pytest.mark.parametrize("name", available_methods())
def test_method_contract(name):
    """Every registered method: declared input and output, explicit keyword parameters with defaults, select()
    only after fit(), select() pure, result of the declared type with the method's name, parameters and the
    data's provenance, unknown parameters a one-line error."""
    import inspect

    from langneurons.methods import CONSUMES, RETURNS, method_class
    from langneurons.sets.parameterset import ParameterSet

    cls = method_class(name)
    assert cls.consumes in CONSUMES and cls.returns in RETURNS
    assert cls.consumes in CONTRACT_DATA, f"no contract data for consumes={cls.consumes!r}: add it to CONTRACT_DATA"
    signature = list(inspect.signature(cls.__init__).parameters.values())[1:]
    defaults = {p.name: p.default for p in signature}
    assert defaults and all(p.default is not p.empty and p.kind is p.POSITIONAL_OR_KEYWORD for p in signature)
    method = get_method(name)
    assert method.get_params() == defaults  # every parameter explicit, stored under its own name
    assert get_method(name, **defaults).get_params() == defaults
    with pytest.raises(ln.LangNeuronsError, match="before fit"):
        method.select()

    data = CONTRACT_DATA[cls.consumes]()
    assert method.fit(data) is method
    state = fingerprint(vars(method))
    first, second = method.select(), method.select()
    assert same(fingerprint(vars(method)), state)  # select() changes nothing
    assert first is not second and canonical(first) == canonical(second)
    assert isinstance(first, {"neuron_set": ln.NeuronSet, "parameter_set": ParameterSet}[cls.returns])
    assert first.method == name and first.languages == data.languages
    assert all(first.parameters[key] == value for key, value in defaults.items())
    assert isinstance(first.source, dict) and first.source  # provenance of the data it was fitted on
    assert sum(first.sizes().values()) > 0
    if cls.returns == "neuron_set":
        scores = method.scores_ if isinstance(method.scores_, dict) else {"": method.scores_}  # per site allowed
        assert all(tuple(s.shape) == (4, 50) for s in scores.values()) and (first.num_layers, first.width) == (4, 50)
    with pytest.raises(ln.LangNeuronsError, match="no_such_parameter") as error:
        get_method(name, no_such_parameter=1)
    assert "\n" not in str(error.value)


def test_registration_checks_the_declaration():
    from langneurons.methods import NeuronMethod, register_method

    class NoDefault(NeuronMethod):
        name = "no_default_test"

        def __init__(self, rate):
            self.rate = rate

    class Star(NeuronMethod):
        name = "star_test"

        def __init__(self, **params):
            self.params = params

    class Consumes(NeuronMethod):
        name = "consumes_test"
        consumes = "text"

    for cls, message in ((NoDefault, "no default"), (Star, "explicitly"), (Consumes, "consumes")):
        with pytest.raises(ValueError, match=message):
            register_method(cls)
        assert cls.name not in available_methods()


def test_pv_is_a_registered_method_of_models():
    from langneurons.methods import method_class

    assert "pv" in available_methods(consumes="models", returns="parameter_set")
    assert "pv" not in available_methods(consumes="activation_stats")
    assert method_class("pv").returns == "parameter_set"
    with pytest.raises(ln.LangNeuronsError, match="not activation statistics"):
        ln.identify(contract_stats(), "pv")
    with pytest.raises(ln.LangNeuronsError, match=r"unknown method 'nope'; available: .*pv \(models -> parameter_set\)"):
        get_method("nope")


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
