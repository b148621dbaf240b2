"""Provenance in the report: what an artefact was made from (model, site, corpus, software), collapsed on its card;
each corpus shown once per report (later cards link to the first)."""

from __future__ import annotations

import json
from typing import Any

from langneurons.report.context import content_key, first_time
from langneurons.report.discover import Artefact
from langneurons.report.html import Cell, details, key_values, pre, same_as, table

def model_of(meta: dict[str, Any]) -> str | None:
    """The model an artefact came from (its own field, or its source's)."""
    for holder in (meta, meta.get("source") or {}, (meta.get("neurons") or {}).get("source") or {}):
        if isinstance(holder, dict) and holder.get("model"):
            return str(holder["model"])
    base = (meta.get("source") or {}).get("base") if isinstance(meta.get("source"), dict) else None
    if isinstance(base, dict) and base.get("path"):  # a parameter set: the base model it was found on
        return str(base["path"])
    return None


SHOWN_KEYS = {"kind", "schema_version", "created", "environment", "tensors_sha256", "model", "revision",
              "model_type", "model_class", "num_parameters", "dtype", "device", "site", "parameters", "title",
              "summary", "tables", "figures", "arrays", "raw", "headline"}


#: sites that hold hidden states, not neurons (shown as such, never as a neuron site)
HIDDEN_STATE_SITES = {"layer.out"}


def site_fact(site: Any) -> tuple[str, Any]:
    """``("neuron site", site)``, or ``("hidden states", ...)`` for a residual-stream site such as ``layer.out``."""
    if isinstance(site, str) and site in HIDDEN_STATE_SITES:
        return "hidden states", f"{site} (decoder layer output, not a neuron site)"
    return "neuron site", site


def corpus_signature(corpus: Any) -> str | None:
    """What identifies a corpus block: its path, files with their checksums, window length and cap."""
    files = corpus.get("files") if isinstance(corpus, dict) else None
    if not isinstance(files, dict) or not files:
        return None
    checksums = sorted((lang, (entry or {}).get("sha256")) for lang, entry in files.items() if isinstance(entry, dict))
    return content_key("corpus", corpus.get("path"), checksums, corpus.get("seq_len"), corpus.get("max_tokens"))


def corpus_block(corpus: Any, tokens: dict[str, Any] | None = None, caption: str = "corpus") -> str:
    """Per language: file, SHA-256, documents, windows, tokens; shown once per report (later: a link)."""
    files = corpus.get("files") if isinstance(corpus, dict) and isinstance(corpus.get("files"), dict) else {}
    tokens = tokens or {}
    languages = list(files) + [lang for lang in tokens if lang not in files]
    if not languages:
        return ""
    where = corpus.get("path") if isinstance(corpus, dict) else None
    settings = {k: corpus.get(k) for k in ("seq_len", "max_tokens")} if isinstance(corpus, dict) else {}
    text = caption + (f": {where}" if where else "") + "".join(f", {k}={v}" for k, v in settings.items()
                                                               if v is not None)
    signature = corpus_signature(corpus)
    earlier = first_time(signature) if signature else None
    if earlier is not None:
        return same_as(text, earlier)
    rows = []
    for lang in languages:
        entry = files.get(lang) or {}
        digest = str(entry.get("sha256") or "")
        rows.append([lang, entry.get("file", ""), Cell(f"{digest[:10]}…" if digest else "", title=digest, cls="mono"),
                     entry.get("documents", ""), entry.get("windows", ""), tokens.get(lang, entry.get("tokens", ""))])
    return table(["language", "file", "sha256", "documents", "windows", "tokens"], rows, caption=text)


def provenance(artefact: Artefact, extra: list[tuple[str, Any]] | None = None, other_fields: bool = False,
               corpora: list[tuple[str, Any, dict[str, Any] | None]] = ()) -> str:
    """The artefact's provenance, collapsed: facts, the parameters, its corpora ``(caption, corpus,
    tokens)`` (each shown once per report) and the whole ``meta.json``."""
    meta = artefact.meta
    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}

    def pick(key: str) -> Any:
        return meta.get(key) if meta.get(key) not in (None, "") else source.get(key)

    environment = meta.get("environment") if isinstance(meta.get("environment"), dict) else {}
    checksum = meta.get("tensors_sha256")
    facts: list[tuple[str, Any]] = [
        ("model", model_of(meta)), ("revision", pick("revision")), ("model type", pick("model_type")),
        ("model class", meta.get("model_class")), ("model parameters", meta.get("num_parameters")),
        ("dtype", pick("dtype")), ("device", meta.get("device")), site_fact(pick("site")),
        *(extra or []),
    ]
    if other_fields:
        for key, value in meta.items():
            if key in SHOWN_KEYS or key in ("source", "model_fingerprint"):
                continue
            short_list = isinstance(value, list) and len(value) <= 24 and all(
                isinstance(v, (str, int, float)) for v in value)
            if isinstance(value, (str, int, float, bool)) or short_list:
                facts.append((key.replace("_", " "), value))
    facts += [
        ("created", meta.get("created")),
        ("schema", f"{meta.get('kind')} v{meta.get('schema_version', '?')}"),
        ("software", " · ".join(f"{k} {v}" for k, v in environment.items())),
        ("tensors sha256", f"{checksum[:16]}…" if isinstance(checksum, str) else None),
        ("directory", str(artefact.path)),
    ]
    parts = [key_values(facts)]
    parameters = meta.get("parameters")
    if isinstance(parameters, dict) and parameters:
        parts.append("<h4>Parameters</h4>")
        parts.append(key_values([(str(k), _parameter_value(v)) for k, v in parameters.items()]))
    for caption, corpus, tokens in corpora:
        if corpus:
            parts.append(corpus_block(corpus, tokens, caption))
    parts.append(details("meta.json", pre(json.dumps(meta, indent=2, ensure_ascii=False, default=str))))
    created = f", {meta['created']}" if meta.get("created") else ""
    model = model_of(meta)
    return details(f"Provenance{': ' + model if model else ''}{created}", "".join(parts), cls="provenance")


def _parameter_value(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


