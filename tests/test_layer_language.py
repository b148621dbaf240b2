"""Layer language by logit lens (Zhao et al. Figure 1, appendix A) and the identifier's confidence."""

from __future__ import annotations

import pytest
import torch

from langneurons.analysis.layer_language import TokenClassifier, answer_layer_tokens, greedy_answers, layer_language
from langneurons.evaluation.langid import get_identifier
from langneurons.testbed.tiny import tiny_model


class WordsTokenizer:
    """Token ``i`` decodes to ``WORDS[i]``; no special tokens."""

    WORDS = ["the", "Der", "的", "123", "und"]
    eos_token_id = pad_token_id = bos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(self.WORDS[i] for i in ids)


def test_confidence_and_confident_labels():
    langdetect = get_identifier("langdetect")
    code, probability = langdetect.detect_with_confidence("the")
    assert code == "en" and 0.7 < probability <= 1.0
    assert langdetect.detect_with_confidence("123") == (None, 0.0)
    assert langdetect.detect_confident("the") == "en"
    assert langdetect.detect_confident("the", min_confidence=1.01) is None   # never that sure
    assert langdetect.detect_confident("的") == "zh"                         # zh-cn is the project's zh


def test_cld3_reliability_is_used_when_installed():
    pytest.importorskip("gcld3")
    cld3 = get_identifier("cld3")
    assert cld3.detect_confident("the") == "en" and cld3.detect_confident("Jesus said") is None  # not reliable


def test_token_categories_by_hand():
    classifier = TokenClassifier(WordsTokenizer(), get_identifier("langdetect"), 0.7, "en")
    ids = torch.tensor([[[0, 1], [2, 3]], [[4, 4], [0, 0]]])   # layer 0: the Der 的 123; layer 1: und und the the
    counts = classifier.count(ids, "de")
    assert counts.tolist() == [[1, 1, 1, 1], [2, 2, 0, 0]]    # english, input (de), other (zh), non-word


def test_greedy_answers_and_lens_positions_by_hand():
    model = tiny_model("llama", vocab_size=300)
    prompts = [[5, 6, 7, 8, 9], [10, 11]]

    class Tokenizer:
        pad_token_id, eos_token_id, bos_token_id = 0, 2, 1

    answers = greedy_answers(model, Tokenizer(), prompts, max_new_tokens=4, batch_size=2)
    for prompt, answer in zip(prompts, answers):
        row = list(prompt)
        expected = []
        for _ in range(4):  # greedy by hand, unpadded, no cache
            token = int(model(input_ids=torch.tensor([row])).logits[0, -1].argmax())
            if token == 2:
                break
            expected.append(token)
            row.append(token)
        assert answer == expected
        ids = answer_layer_tokens(model, prompt, answer, top_k=3, final_norm=True)
        assert ids.shape == (2, len(answer), 3)
        assert ids[-1, :, 0].tolist() == answer  # the last layer's top-1 with the final norm is the greedy token


def test_layer_language_on_a_tiny_model(tokenizer):
    from langneurons.model.loading import LoadedModel

    model = tiny_model("llama", vocab_size=300)
    loaded = LoadedModel(model, tokenizer, "tiny")
    result = layer_language(loaded, {"aa": ["abc def", "ghi"], "bb": ["абв где"]}, max_new_tokens=3, top_k=4,
                            english="aa", progress=False)
    assert result.languages == ["aa", "bb"] and set(result.counts) == {"final_norm", "no_final_norm"}
    for counts in result.counts.values():
        assert counts.shape == (2, 2, 4)
        # English and the input language coincide for the English prompts; every token falls in one category
        assert torch.equal(counts[0, :, 0], counts[0, :, 1])
        other = counts[1]
        assert (other[:, 0] + other[:, 2] + other[:, 3] + other[:, 1]).tolist() == [result.tokens["bb"]] * 2
    shares = result.shares()
    assert float(shares.max()) <= 1.0
    out = result.output()
    assert [t.file for t in out.tables] == ["layer_language.csv", "layer_language_no_norm.csv"]
