"""Entropy-based selection shared by LAPE (activation probability) and LAVE (mean activation value).

Exactly the LAPE reference code (``identify.py``), on a value tensor ``v[language, layer, neuron]``:

1. normalise over languages, ``v' = v / sum_k v`` (0/0 -> 0), entropy ``H = -sum_k v' log v'`` with
   ``0 log 0 = 0`` (eq. 5);
2. ``filter``: the ``k``-th smallest of all ``L x I x K`` values, ``k = round(filter_rate * N)``;
   a neuron with no language strictly above it is excluded;
3. the ``round(top_rate * L * I)`` lowest-entropy remaining neurons, pooled over all layers
   (ties broken by position, layer-major);
4. each selected neuron goes to every language whose value is strictly above the
   ``activation_bar_ratio`` percentile computed the same way (so a neuron may serve several).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def kth_percentile_value(values: torch.Tensor, ratio: float) -> float:
    """The ``k``-th smallest of ``values`` (flattened), ``k = round(ratio * numel)`` clamped to [1, numel]."""
    flat = values.flatten()
    k = min(max(round(flat.numel() * ratio), 1), flat.numel())
    return float(flat.kthvalue(k).values)


def language_entropy(values: torch.Tensor) -> torch.Tensor:
    """``float64[layer, neuron]`` entropy over languages of ``values[language, layer, neuron]``."""
    v = values.double()
    total = v.sum(0, keepdim=True)
    normed = torch.where(total > 0, v / total, torch.zeros_like(v))
    normed = torch.nan_to_num(normed, nan=0.0)
    logs = torch.where(normed > 0, normed.log(), torch.zeros_like(normed))
    return -(normed * logs).sum(0)


@dataclass
class EntropySelection:
    """The intermediate results of an entropy selection (kept on the fitted method for inspection)."""

    entropy: torch.Tensor  # float64[L, I], +inf where filtered out
    filter_value: float
    activation_bar: float
    selected: torch.Tensor  # long[n] flat indices (layer * I + neuron), in selection order
    membership: torch.Tensor  # bool[K, L, I]


def entropy_select(values: torch.Tensor, top_rate: float, filter_rate: float,
                   activation_bar_ratio: float) -> EntropySelection:
    """Run steps 1-4 above on ``values[language, layer, neuron]``."""
    num_langs, num_layers, width = values.shape
    entropy = language_entropy(values)
    filter_value = kth_percentile_value(values, filter_rate)
    passes_filter = (values > filter_value).any(0)
    entropy = torch.where(passes_filter, entropy, torch.full_like(entropy, float("inf")))
    budget = min(round(num_layers * width * top_rate), int(passes_filter.sum()))
    order = torch.sort(entropy.flatten(), stable=True).indices
    selected = order[:budget]
    bar = kth_percentile_value(values, activation_bar_ratio)
    flat_values = values.reshape(num_langs, -1)
    membership = torch.zeros(num_langs, num_layers * width, dtype=torch.bool)
    membership[:, selected] = flat_values[:, selected] > bar
    return EntropySelection(entropy, filter_value, bar, selected, membership.view(num_langs, num_layers, width))
