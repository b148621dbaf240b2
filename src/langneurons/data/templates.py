"""Prompt templates for parallel items: a string with ``{text}`` and task fields, and the papers' presets.

``{text}`` is the item's text in the row's language (a line of ``{lang}.txt``, the language's JSONL field, or a
task's prompt); any other field ``{name}`` is read from the parallel corpus's extra fields (per item), as

* ``name`` holding a string (or number): the same value in every language (e.g. an English context);
* ``name`` holding an object ``{lang: value}``: the row's language's value;
* ``name_{lang}`` (e.g. ``premise_fr``): the row's language's value.

A field with no data is a one-line error naming the field and where it was looked for. ``"{text}"`` is the
line exactly as written. Literal braces are written ``{{`` and ``}}``.

Presets (Sharing Matters, Appendix A.2), by name:

* ``text``: ``{text}``;
* ``xnli``: ``Take the following as truth: {premise} Then the following statement: '{hypothesis}' is 'true',
  'false', or 'inconclusive'?``;
* ``fact_probing``: ``The capital of {subject} is`` (the paper's English P36 prompt; for the multilingual
  mParaRel patterns use the ``mpararel`` task instead);
* ``knowledge_editing``: ``{context} Question: {question} Answer:``.

Interpretation: the paper typesets the XNLI quotes as typographic single quotes; the preset uses ASCII ``'``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from langneurons.errors import LangNeuronsError

PRESETS: dict[str, str] = {
    "text": "{text}",
    "xnli": "Take the following as truth: {premise} Then the following statement: '{hypothesis}' is 'true', "
            "'false', or 'inconclusive'?",
    "fact_probing": "The capital of {subject} is",
    "knowledge_editing": "{context} Question: {question} Answer:",
}


@dataclass(frozen=True)
class Template:
    """A prompt template (``text``: the format string; ``name``: the preset it came from, if any)."""

    text: str
    name: str | None = None

    @property
    def fields(self) -> list[str]:
        """The field names, in order of first use."""
        return template_fields(self.text)

    @property
    def verbatim(self) -> bool:
        """Whether the template is ``{text}``: the line exactly as written."""
        return self.text == "{text}"

    def render(self, values: Mapping[str, Any]) -> str:
        missing = [name for name in self.fields if name not in values]
        if missing:
            raise LangNeuronsError(f"template field {{{missing[0]}}} has no data")
        return self.text.format_map({name: values[name] for name in self.fields})

    def describe(self) -> dict[str, Any]:
        return {"template": self.text, "preset": self.name, "fields": self.fields}


def template_fields(text: str) -> list[str]:
    """The field names of a format string (a one-line error for malformed braces, indexing or conversions)."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise LangNeuronsError(f"template {text!r} is not a valid format string: {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise LangNeuronsError(f"template {text!r}: field {{{name}}} must be a plain name such as {{text}}")
        if spec or conversion:
            raise LangNeuronsError(f"template {text!r}: field {{{name}}} takes no format spec or conversion")
        if name not in names:
            names.append(name)
    return names


def as_template(template: "str | Template | None") -> Template:
    """A preset name, a format string with at least one field, or a :class:`Template` (``None``: ``{text}``)."""
    if template is None:
        return Template("{text}", "text")
    if isinstance(template, Template):
        return template
    if template in PRESETS:
        return Template(PRESETS[template], template)
    if not template_fields(template):
        raise LangNeuronsError(f"template {template!r} is neither a preset ({', '.join(PRESETS)}) nor a string with "
                               "{text} or another field")
    return Template(template)


def field_value(fields: Mapping[str, Sequence[Any]], name: str, item: int, language: str) -> Any:
    """Field ``name`` of item ``item`` in ``language`` from a parallel corpus's extra ``fields`` (see the module
    docstring: a plain value, an object by language, or ``name_{language}``); a one-line error when absent."""
    if name in fields:
        value = fields[name][item]
        if isinstance(value, Mapping):
            if language not in value:
                raise LangNeuronsError(f"field {{{name}}} of item {item} has no value for {language!r} "
                                       f"(has {', '.join(map(str, value))})")
            value = value[language]
        if value is None:
            raise LangNeuronsError(f"field {{{name}}} of item {item} is empty")
        return value
    per_language = f"{name}_{language}"
    if per_language in fields:
        value = fields[per_language][item]
        if value is None:
            raise LangNeuronsError(f"field {per_language!r} of item {item} is empty")
        return value
    raise LangNeuronsError(f"template field {{{name}}} has no data: the corpus has no field {name!r} or "
                           f"{per_language!r}")


def render_item(template: Template, text: str, fields: Mapping[str, Sequence[Any]], item: int, language: str) -> str:
    """The prompt of ``item`` in ``language``: ``template`` with ``{text}`` and its other fields filled."""
    if template.verbatim:
        return text
    values = {name: (text if name == "text" else field_value(fields, name, item, language))
              for name in template.fields}
    return template.render({name: value if isinstance(value, str) else str(value) for name, value in values.items()})

