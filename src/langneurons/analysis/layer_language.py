"""The language of every layer by the logit lens (Zhao et al. 2024, Figure 1 and appendix A).

For each prompt the model generates an answer (greedy, stopped at EOS); the hidden state of every layer
(``layer.out``) at every position that predicts an answer token (the prompt's last position to the
answer's second to last) is decoded through the output head, with and without the final norm
(:func:`langneurons.model.lens.layer_logit_lens`), and its top-``k`` tokens (default 10) are kept. Each token,
decoded on its own, is classified by a language identifier; a label counts only when the identifier is
confident (:meth:`~langneurons.evaluation.langid.LanguageIdentifier.detect_confident`: probability at least
``min_confidence``, default 0.7, and cld3's ``is_reliable``; the paper uses cld3's ``is_reliable``), otherwise
the token is a *non-word*. Per input language and layer the result is the share of decoded tokens that are
English, in the input's language, in another language, or non-words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from langneurons.analysis.output import AnalysisOutput, Figure, Table, declare_kind, summary_of
from langneurons.errors import LangNeuronsError

CATEGORIES = ("english", "input_language", "other_language", "non_word")


def _headline(artefact: Any) -> str | None:
    return summary_of(artefact).get("headline")


KIND = declare_kind("layer_language", "Layer language by logit lens", 58,
                    "Share of English, input-language and non-word tokens among the top-k logit-lens tokens of "
                    "every layer while the model answers (Zhao et al. Figure 1).", _headline)


@dataclass
class LayerLanguage:
    """``counts[norm]`` ``int64[languages, layers, 4]`` (:data:`CATEGORIES`; English and the input language are
    counted independently, so for English inputs they coincide); ``tokens[lang]`` decoded tokens per layer."""

    languages: list[str]
    counts: dict[str, torch.Tensor]
    tokens: dict[str, int]
    english: str = "en"
    examples: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def shares(self, norm: str = "final_norm") -> torch.Tensor:
        """``float64[languages, layers, 4]``: the share of each category per input language and layer."""
        counts = self.counts[norm].double()
        totals = torch.tensor([max(self.tokens[lang], 1) for lang in self.languages], dtype=torch.float64)
        return counts / totals.view(-1, 1, 1)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tokens_per_layer": self.tokens}
        others = [i for i, lang in enumerate(self.languages) if lang != self.english]
        for norm in self.counts:
            shares = self.shares(norm)
            if not others:
                continue
            mean = shares[others].mean(0)  # [layers, 4]
            english = mean[:, 0].tolist()
            peak = max(range(len(english)), key=english.__getitem__)
            out[norm] = {"non_english_inputs": {c: mean[:, j].tolist() for j, c in enumerate(CATEGORIES)},
                         "english_peak_layer": peak, "english_peak_share": english[peak]}
        if "final_norm" in out:
            best = out["final_norm"]
            last = best["non_english_inputs"]["input_language"][-1]
            out["headline"] = (f"On non-English inputs the English share of the logit-lens tokens peaks at layer "
                               f"{best['english_peak_layer']} ({best['english_peak_share']:.1%}); at the last layer "
                               f"{last:.1%} are in the input's language.")
        return out

    def output(self) -> AnalysisOutput:
        tables, figures = [], []
        for norm in self.counts:
            shares = self.shares(norm)
            suffix = "" if norm == "final_norm" else "_no_norm"
            rows = [[lang, layer, *shares[k, layer].tolist(), self.tokens[lang]]
                    for k, lang in enumerate(self.languages) for layer in range(shares.shape[1])]
            tables.append(Table(f"layer_language{suffix}.csv", f"Share of top-k lens tokens per category ({norm})",
                                ["language", "layer", *CATEGORIES, "tokens"], rows,
                                rows_are="input language and layer (0-based, the layer's output)",
                                columns_are="share of the decoded top-k tokens; tokens decoded per layer"))

            def draw(path: Path, shares: torch.Tensor = shares, norm: str = norm) -> None:
                from langneurons.analysis.figures import small_multiples

                panels = {lang: {"English": shares[k, :, 0].tolist(), "input language": shares[k, :, 1].tolist(),
                                 "non-word": shares[k, :, 3].tolist()} for k, lang in enumerate(self.languages)}
                small_multiples(panels, path, f"Layer language by logit lens ({norm.replace('_', ' ')})", "layer",
                                "share of top-k tokens")

            figures.append(Figure(f"layer_language{suffix}.png", f"Layer language ({norm}), Figure 1", draw))
        meta = {"languages": self.languages, "english": self.english, "categories": list(CATEGORIES), **self.meta}
        from langneurons.sets.output import Records

        records = [Records("examples.jsonl", "Prompts, answers and the top tokens of every layer", self.examples)]
        return AnalysisOutput(KIND, "Layer language by logit lens", tables, figures, self.summary(), meta,
                              records=records)

    def save(self, directory: str | Path, plot: bool = True) -> Path:
        return self.output().save(directory, plot=plot)


@torch.inference_mode()
def greedy_answers(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   batch_size: int = 8) -> list[list[int]]:
    """Greedy answer token ids of each prompt (left-padded batches, KV cache), cut at the first EOS."""
    from langneurons.evaluation.generation import context_length, eos_token_ids, left_padded, pad_token_id
    from langneurons.model.sites import input_device

    eos, pad, device = eos_token_ids(model, tokenizer), pad_token_id(tokenizer), input_device(model)
    answers: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        rows = [list(r) for r in prompts[start:start + batch_size]]
        ids, mask = left_padded(rows, pad)
        limit = context_length(model)
        new = max_new_tokens if limit is None else min(max_new_tokens, limit - ids.shape[1])
        if new < 1:
            raise LangNeuronsError(f"a prompt of {ids.shape[1]} tokens leaves no room in the model's context")
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new,
                             do_sample=False, num_beams=1, pad_token_id=pad, eos_token_id=sorted(eos) or None,
                             use_cache=True, temperature=1.0, top_p=1.0, top_k=None, repetition_penalty=1.0)
        for row in out[:, ids.shape[1]:].tolist():
            end = next((i for i, token in enumerate(row) if token in eos), len(row))
            answers.append(row[:end])
    return answers


def answer_layer_tokens(model: Any, prompt: Sequence[int], answer: Sequence[int], top_k: int, final_norm: bool
                        ) -> torch.Tensor:
    """``long[layers, len(answer), k]``: top-``k`` lens tokens of every layer at the positions predicting ``answer``."""
    from langneurons.model.lens import layer_logit_lens

    full = torch.tensor([*prompt, *answer], dtype=torch.long)
    lens = layer_logit_lens(model, full[None], final_norm=final_norm, top_k=top_k)
    start = len(prompt) - 1
    return lens.ids[:, 0, start:start + len(answer)]


class TokenClassifier:
    """Category of a token id for an input language (cached per id): English, the input's, another, non-word."""

    def __init__(self, tokenizer: Any, identifier: Any, min_confidence: float, english: str) -> None:
        self.tokenizer, self.identifier = tokenizer, identifier
        self.min_confidence, self.english = min_confidence, english
        self._labels: dict[int, str | None] = {}

    def label(self, token: int) -> str | None:
        if token not in self._labels:
            text = self.tokenizer.decode([int(token)], skip_special_tokens=True).strip()
            self._labels[token] = self.identifier.detect_confident(text, self.min_confidence)
        return self._labels[token]

    def count(self, ids: torch.Tensor, language: str) -> torch.Tensor:
        """``int64[layers, 4]`` category counts of ``ids[layers, ...]``."""
        out = torch.zeros(ids.shape[0], len(CATEGORIES), dtype=torch.long)
        for layer, row in enumerate(ids.reshape(ids.shape[0], -1).tolist()):
            for token in row:
                label = self.label(token)
                if label is None:
                    out[layer, 3] += 1
                    continue
                out[layer, 0] += label == self.english
                out[layer, 1] += label == language
                out[layer, 2] += label not in (self.english, language)
        return out


def layer_language(loaded: Any, prompts: dict[str, list[str]], max_new_tokens: int = 32, top_k: int = 10,
                   identifier: str | None = None, min_confidence: float = 0.7, english: str = "en",
                   final_norms: Sequence[bool] = (True, False), batch_size: int = 8, examples: int = 3,
                   progress: bool = True) -> LayerLanguage:
    """Figure 1 for ``prompts`` (``{language: [prompt text]}``, tokenized with the tokenizer's special tokens)."""
    from langneurons.evaluation.generation import encode_prompts
    from langneurons.evaluation.langid import get_identifier
    from langneurons.model.geometry import model_geometry
    from langneurons.progress import progress_bar

    if top_k < 1 or max_new_tokens < 1:
        raise LangNeuronsError(f"top_k and max_new_tokens must be at least 1, got {top_k} and {max_new_tokens}")
    if not prompts or any(not texts for texts in prompts.values()):
        raise LangNeuronsError("layer language needs at least one prompt per language")
    model, tokenizer = loaded.model, loaded.tokenizer
    ident = get_identifier(identifier)
    classifier = TokenClassifier(tokenizer, ident, min_confidence, english)
    layers = model_geometry(model).num_layers
    norms = {("final_norm" if norm else "no_final_norm"): bool(norm) for norm in final_norms}
    counts = {name: torch.zeros(len(prompts), layers, len(CATEGORIES), dtype=torch.long) for name in norms}
    tokens = {lang: 0 for lang in prompts}
    kept, empty = [], 0
    total = sum(len(texts) for texts in prompts.values())
    with progress_bar("layer language", total, unit="prompt",
                      factors=[(total, f"prompts in {len(prompts)} languages"), (max_new_tokens, "new tokens")], progress=progress) as bar:
        for k, (lang, texts) in enumerate(prompts.items()):
            rows = encode_prompts(tokenizer, texts)
            answers = greedy_answers(model, tokenizer, rows, max_new_tokens, batch_size)
            for prompt, answer, text in zip(rows, answers, texts):
                bar.update(1)
                if not answer:
                    empty += 1
                    continue
                tokens[lang] += len(answer) * top_k
                example = {"language": lang, "prompt": text, "answer": tokenizer.decode(answer)}
                for name, norm in norms.items():
                    ids = answer_layer_tokens(model, prompt, answer, top_k, norm)
                    counts[name][k] += classifier.count(ids, lang)
                    if sum(e["language"] == lang for e in kept) < examples:
                        example[name] = [[tokenizer.decode([t]) for t in ids[layer, 0].tolist()]
                                         for layer in range(layers)]
                if sum(e["language"] == lang for e in kept) < examples:
                    kept.append(example)
    from langneurons.sets.compatibility import model_provenance

    meta = {**model_provenance(loaded), "parameters": {"max_new_tokens": max_new_tokens, "top_k": top_k,
                                                  "min_confidence": min_confidence, "batch_size": batch_size,
                                                  "decoding": "greedy"},
            "language_identifier": ident.describe(), "prompts": {lang: len(t) for lang, t in prompts.items()},
            "empty_answers": empty}
    return LayerLanguage(list(prompts), counts, tokens, english, kept, meta)
