"""PLND language-specific neurons (section 2.3): the statistics, the "important for every input" rules, recording."""

from __future__ import annotations

import pytest
import torch

import langneurons as ln
from langneurons.methods.plnd import plnd_importance
from langneurons.recording.importance import PLNDInputs, parse_lines, plnd_inputs, record_importance
from langneurons.stats.importance import ImportanceStats, layer_ranks, load_importance
from langneurons.testbed.tiny import tiny_model


def test_layer_ranks_by_hand():
    values = torch.tensor([[0.1, 0.9, 0.5, 0.5], [3.0, 1.0, 2.0, 0.0]])
    # layer 0: 0.9 (id 1) first, then the tie 0.5 / 0.5 in id order (2 before 3), then 0.1
    assert layer_ranks(values).tolist() == [[3, 0, 1, 2], [0, 2, 1, 3]]


def hand_stats() -> ImportanceStats:
    """Two languages, one layer of 5 FFN neurons, two inputs each (numbers chosen to give known sets)."""
    stats = ImportanceStats(["en", "fr"], {"ffn": (1, 5)})
    stats.add("en", {"ffn": torch.tensor([[5.0, 4.0, 1.0, 3.0, 0.0]])}, tokens=3)  # ranks 0 1 3 2 4
    stats.add("en", {"ffn": torch.tensor([[5.0, 0.5, 4.0, 3.0, 0.0]])}, tokens=4)  # ranks 0 3 1 2 4
    stats.add("fr", {"ffn": torch.tensor([[6.0, 0.0, 1.0, 2.0, 0.5]])}, tokens=2)  # ranks 0 4 2 1 3
    stats.add("fr", {"ffn": torch.tensor([[6.0, 0.1, 0.2, 2.0, 7.0]])}, tokens=2)  # ranks 1 4 3 2 0
    return stats


def ids(neurons, lang, site="ffn.down_in"):
    return neurons.layers(lang, site)[0].tolist()


def test_worst_rank_minimum_and_mean_by_hand():
    stats = hand_stats()
    assert stats.worst_rank["ffn"].tolist() == [[[0, 3, 3, 2, 4]], [[1, 4, 3, 2, 3]]]
    expected = torch.tensor([[[5.0, 0.5, 1.0, 3.0, 0.0]], [[6.0, 0.0, 0.2, 2.0, 0.5]]])
    assert torch.equal(stats.importance_min["ffn"], expected)
    assert stats.mean_importance("ffn")[0, 0].tolist() == [5.0, 2.25, 2.5, 3.0, 0.0]
    assert stats.input_count.tolist() == [2, 2] and stats.token_count.tolist() == [7, 4]


def test_top_k_for_every_input_threshold_and_shared():
    stats = hand_stats()
    top3 = ln.identify(stats, "plnd", top_k_ffn=3)
    assert ids(top3, "en") == [0, 3] and ids(top3, "fr") == [0, 3]   # in the top 3 of both inputs
    top2 = ln.identify(stats, "plnd", top_k_ffn=2)
    assert ids(top2, "en") == [0] and ids(top2, "fr") == [0]
    threshold = ln.identify(stats, "plnd", threshold_ffn=2.0)
    assert ids(threshold, "en") == [0, 3] and ids(threshold, "fr") == [0, 3]
    threshold = ln.identify(stats, "plnd", threshold_ffn=0.5)
    assert ids(threshold, "en") == [0, 1, 2, 3] and ids(threshold, "fr") == [0, 3, 4]
    specific = ln.identify(stats, "plnd", threshold_ffn=0.5, exclude_shared=True)   # minus {0, 3}, shared by all
    assert ids(specific, "en") == [1, 2] and ids(specific, "fr") == [4]
    assert specific.sites == ["ffn.down_in"] and specific.method == "plnd"
    assert specific.parameters["rules"] == {"ffn": ["threshold", 0.5]}


def test_default_rates_are_the_reference_codes_top_numbers_scaled_to_the_width():
    stats = ImportanceStats(["en"], {"ffn": (1, 11008), "attn.q": (1, 4096), "attn.k": (1, 1024)})
    stats.add("en", {s: torch.rand(*g) for s, g in stats.grids.items()})
    method = ln.get_method("plnd").fit(stats)
    assert method.rules_ == {"ffn": ("top_k", 2000), "attn.q": ("top_k", 1000), "attn.k": ("top_k", 250)}
    neurons = method.select()  # one input: every top-k neuron is consistently important
    assert neurons.sizes("ffn.down_in") == {"en": 2000} and neurons.sizes("attn.k") == {"en": 250}


def test_bad_parameters_are_one_line():
    stats = hand_stats()
    for params, message in (({"top_k_ffn": 6}, "larger than the 5 neurons"), ({"top_rate_ffn": 1.5}, r"\[0, 1\]"),
                            ({"top_k_attn": 0}, "positive integer")):
        with pytest.raises(ln.LangNeuronsError, match=message) as error:
            ln.identify(stats, "plnd", **params)
        assert "\n" not in str(error.value)
    empty = ImportanceStats(["en", "fr"], {"ffn": (1, 5)})
    empty.add("en", {"ffn": torch.ones(1, 5)})
    with pytest.raises(ln.LangNeuronsError, match="no input for language.* fr"):
        ln.identify(empty, "plnd")
    with pytest.raises(ln.LangNeuronsError, match="not activation statistics"):
        ln.identify(ln.ActivationStats.empty(["en"], 1, 5), "plnd")


def test_save_load_merge(tmp_path):
    stats = hand_stats()
    stats.save(tmp_path / "imp")
    back = load_importance(tmp_path / "imp")
    for name in ("worst_rank", "importance_min", "importance_sum"):
        assert torch.equal(getattr(back, name)["ffn"], getattr(stats, name)["ffn"])
    first = ImportanceStats(["en", "fr"], {"ffn": (1, 5)})
    second = ImportanceStats(["fr", "en"], {"ffn": (1, 5)})
    first.add("en", {"ffn": torch.tensor([[5.0, 4.0, 1.0, 3.0, 0.0]])}, 3)
    first.add("fr", {"ffn": torch.tensor([[6.0, 0.0, 1.0, 2.0, 0.5]])}, 2)
    second.add("en", {"ffn": torch.tensor([[5.0, 0.5, 4.0, 3.0, 0.0]])}, 4)
    second.add("fr", {"ffn": torch.tensor([[6.0, 0.1, 0.2, 2.0, 7.0]])}, 2)
    merged = first.merge(second)
    assert torch.equal(merged.worst_rank["ffn"], stats.worst_rank["ffn"])
    assert torch.equal(merged.importance_min["ffn"], stats.importance_min["ffn"])
    assert torch.equal(merged.importance_sum["ffn"], stats.importance_sum["ffn"])


def write_corpus(root, texts: dict[str, list[str]]):
    root.mkdir()
    for lang, lines in texts.items():
        (root / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


class WordTokenizer:
    """Whitespace words -> ids (3 + position in a fixed vocabulary), no special tokens unless asked."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __call__(self, texts, add_special_tokens=False):
        single = isinstance(texts, str)
        rows = [[3 + (sum(map(ord, w)) % 200) for w in t.split()] for t in ([texts] if single else texts)]
        return {"input_ids": rows[0] if single else rows}


@pytest.mark.parametrize("family,side", [("llama", "left"), ("gpt2", "right")])
def test_recorded_statistics_equal_direct_importance_of_each_input(tmp_path, family, side):
    """The one recorder over padded batches gives the reduction of ``plnd_importance`` of each input alone."""
    model = tiny_model(family)
    texts = {"en": ["a b c d e", "f g h", "i j k l m n o"], "fr": ["p q r s", "t u v w x y", "z a b"]}
    corpus = write_corpus(tmp_path / "c", texts)
    tokenizer = WordTokenizer()
    inputs = plnd_inputs(tokenizer, corpus, max_length=6)
    assert inputs.cut == {"en": 1, "fr": 0}  # "i j k l m n o" is cut to its first 6 words
    from langneurons.recording import importance as module

    batches = list(module.importance_batches(inputs, batch_size=2, padding_side=side))
    assert batches[0].attention_mask is not None and batches[0].attention_mask.sum() < batches[0].input_ids.numel()
    recorded = record_importance(model, inputs, batch_size=2, tokenizer=tokenizer, progress=False)
    expected = ImportanceStats(["en", "fr"], recorded.grids)
    for lang, rows in inputs.rows.items():
        for row in rows:
            expected.add(lang, plnd_importance(model, torch.tensor(row)), len(row))
    assert recorded.structures == ["ffn", "attn.q", "attn.k", "attn.v"]
    for s in recorded.structures:
        torch.testing.assert_close(recorded.importance_sum[s], expected.importance_sum[s], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(recorded.importance_min[s], expected.importance_min[s], rtol=1e-5, atol=1e-6)
    assert recorded.token_count.tolist() == [5 + 3 + 6, 4 + 6 + 3]
    assert recorded.meta["sites"] == {"ffn": "ffn.down_in", "attn.q": "attn.q", "attn.k": "attn.k",
                                      "attn.v": "attn.v"}
    neurons = ln.identify(recorded, "plnd", top_k_ffn=8, top_k_attn=8)
    assert neurons.sites == ["ffn.down_in", "attn.q", "attn.k", "attn.v"]
    assert neurons.grid("attn.k") == (2, ln.model_geometry(model).widths["k"])


def test_corpus_errors_are_one_line(tmp_path):
    tokenizer = WordTokenizer()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "en.txt").write_text("\n\n", encoding="utf-8")
    cases = [(lambda: plnd_inputs(tokenizer, tmp_path / "missing"), "does not exist"),
             (lambda: plnd_inputs(tokenizer, empty), "no document"),
             (lambda: parse_lines("5:2"), "START < STOP"), (lambda: parse_lines("x"), "START:STOP")]
    corpus = write_corpus(tmp_path / "c", {"en": ["a b", "c d", "e f"]})
    cases.append((lambda: plnd_inputs(tokenizer, corpus, lines="10:20"), "no document in lines"))
    for call, message in cases:
        with pytest.raises(ln.LangNeuronsError, match=message) as error:
            call()
        assert "\n" not in str(error.value)
    assert plnd_inputs(tokenizer, corpus, lines="1:3", add_bos=True).rows["en"] == [[1, *tokenizer("c d")["input_ids"]],
                                                                                   [1, *tokenizer("e f")["input_ids"]]]
    windows = plnd_inputs(tokenizer, corpus, mode="windows", max_length=3)
    assert windows.rows["en"] == [tokenizer("a b")["input_ids"] + [2], tokenizer("c d")["input_ids"] + [2]]
    assert isinstance(windows, PLNDInputs)
