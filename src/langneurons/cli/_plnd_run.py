"""The steps of ``langneurons plnd`` (argument parsing is in :mod:`langneurons.cli.plnd`)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from langneurons.cli._common import check_placement, parse_langs, prepare_outputs
from langneurons.errors import LangNeuronsError

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 10**3, "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
          "g": 1 << 30, "gib": 1 << 30, "gb": 10**9}


def parse_memory(value: str | int) -> int:
    """``"1GiB"``, ``"512MiB"``, ``"2e9"``, ``4096`` -> bytes."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", str(value))
    unit = match.group(2).lower() if match else None
    try:
        number = float(match.group(1)) if match else None
    except ValueError:
        number = None
    if number is None or unit not in _UNITS or number <= 0:
        raise LangNeuronsError(f"--memory must be a size such as 1GiB, 512MiB or a number of bytes, got {value!r}")
    return int(number * _UNITS[unit])


def parse_settings(value: str | None) -> dict[str, tuple[str, ...]] | None:
    """``"under,all"`` (default names) or ``"mine=under+gen,all"`` -> ``{name: components}``."""
    from langneurons.analysis.mwork import DEFAULT_SETTINGS

    if not value:
        return None
    settings = {}
    for part in (p.strip() for p in value.split(",") if p.strip()):
        name, sep, components = part.partition("=")
        if sep:
            settings[name] = tuple(c for c in components.split("+") if c)
        elif name in DEFAULT_SETTINGS:
            settings[name] = DEFAULT_SETTINGS[name]
        else:
            raise LangNeuronsError(f"unknown setting {name!r}; use one of {', '.join(DEFAULT_SETTINGS)} or NAME=a+b")
    return settings


def method_params(args: argparse.Namespace) -> dict[str, Any]:
    names = ("top_rate_ffn", "top_rate_attn", "top_k_ffn", "top_k_attn", "threshold_ffn", "threshold_attn")
    params = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.exclude_shared:
        params["exclude_shared"] = True
    return params


def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def identify_neurons(args: argparse.Namespace, loaded: Any = None, importance_out: str | None = None):
    """Record (or read) the importance, select the neurons; returns ``(neurons, stats)``."""
    from langneurons.methods import get_method

    method = get_method("plnd", **method_params(args))  # parameters checked before any model time
    if getattr(args, "importance", None):
        from langneurons.stats.importance import load_importance

        stats = load_importance(args.importance)
        langs = parse_langs(args.langs)
        stats = stats.select_languages(langs) if langs else stats
    else:
        from langneurons.methods.plnd import plnd_widths
        from langneurons.recording.importance import check_corpus, plnd_inputs, record_importance

        if not args.corpus:
            raise LangNeuronsError("plnd identify needs --corpus (or --importance from an earlier run)")
        check_corpus(args.corpus, parse_langs(args.langs), args.lines)
        parse_memory(args.memory)
        loaded = loaded or _load(args)
        structures = tuple(s.strip() for s in args.structures.split(",") if s.strip())
        for structure, width in plnd_widths(loaded.model, structures).items():
            method._rule(structure, width)  # a top-k larger than a width fails before the recording
        inputs = plnd_inputs(loaded.tokenizer, args.corpus, parse_langs(args.langs), args.max_inputs,
                             args.max_length, args.mode, args.add_bos, args.lines)
        stats = record_importance(loaded, inputs, batch_size=args.plnd_batch_size, structures=structures,
                                  ffn_score=args.ffn_score, memory_bytes=parse_memory(args.memory),
                                  compute_dtype=_dtype(args.compute_dtype), progress=not args.no_progress)
        if importance_out:
            stats.save(importance_out)
    return method.fit(stats).select(), stats


def _load(args: argparse.Namespace):
    from langneurons.cli._common import load_model_from_args

    if getattr(args, "site", "ffn.act") != "ffn.act":
        raise LangNeuronsError("plnd scores its own sites (ffn.down_in, attn.q, attn.k, attn.v); use --structures "
                               "instead of --site")
    check_placement(args)
    return load_model_from_args(args)


def run_identify(args: argparse.Namespace) -> int:
    outputs = {"--out": args.out, **({"--save-importance": args.save_importance} if args.save_importance else {})}
    prepare_outputs(args, outputs, {"--model": args.model, "--corpus": args.corpus, "--importance": args.importance})
    neurons, stats = identify_neurons(args, importance_out=args.save_importance)
    neurons.save(args.out)
    print(f"wrote {args.out}: plnd neurons per language: " + ", ".join(
        f"{lang} {n}" for lang, n in neurons.sizes().items()))
    return 0


def run_overlap(args: argparse.Namespace) -> int:
    from langneurons.analysis.overlap import structure_overlap
    from langneurons.sets.neuronset import load_neurons

    prepare_outputs(args, {"--out": args.out}, {"--neurons": args.neurons})
    structure_overlap(load_neurons(args.neurons)).save(args.out)
    print(f"wrote {args.out}: overlap_*.csv, overlap_*.png")
    return 0


def eval_corpus(tokenizer: Any, model: Any, directory: str, langs: list[str] | None, lines: str | None,
                seq_len: int | None, max_tokens: int | None):
    """A :class:`PackedCorpus` of the held-out lines (documents joined with EOS, non-overlapping windows)."""
    import torch

    from langneurons.data.corpus import PackedCorpus, default_seq_len
    from langneurons.data.files import file_sha256, find_corpus_files
    from langneurons.data.streaming import iter_windows
    from langneurons.recording.importance import parse_lines, read_lines

    span, length = parse_lines(lines), seq_len or default_seq_len(model)
    windows, files = {}, {}
    for lang, path in find_corpus_files(directory, langs).items():
        documents = read_lines(path, span)
        if not documents:
            raise LangNeuronsError(f"evaluation file {str(path)!r} has no document in lines {lines} (an empty corpus)")
        windows[lang] = torch.stack(list(iter_windows(tokenizer, documents, length, max_tokens,
                                                      name=f"language {lang!r} ({path.name})")))
        files[lang] = {"file": path.name, "sha256": file_sha256(path), "lines": lines, "windows": len(windows[lang])}
    return PackedCorpus(windows, files, length, max_tokens)


def deactivation_plan(args: argparse.Namespace, neurons: Any):
    """The bands and conditions (checked before any model is loaded)."""
    from langneurons.analysis.mwork import layer_bands, plan_deactivation

    settings = parse_settings(args.settings)
    if not args.eval_corpus and not args.task:
        raise LangNeuronsError("plnd deactivate needs --eval-corpus or --task")
    bands = layer_bands(neurons.num_layers, args.understanding, args.generation, args.task_solving)
    return plan_deactivation(neurons, bands, settings, checks=() if args.no_checks else (
        "no_en_overlap", "no_shared"), check_setting=args.check_setting, english=args.english, seed=args.seed)


def deactivation(args: argparse.Namespace, loaded: Any, neurons: Any, plan: Any = None):
    from langneurons.analysis.mwork_results import mwork_deactivation

    plan = plan or deactivation_plan(args, neurons)
    langs = parse_langs(getattr(args, "eval_langs", None) or args.langs)
    packed = None
    if args.eval_corpus:
        packed = eval_corpus(loaded.tokenizer, loaded.model, args.eval_corpus, langs, args.eval_lines, args.seq_len,
                             args.max_tokens)
    tasks = [_task(args, name, langs or neurons.languages) for name in args.task]
    return mwork_deactivation(loaded, plan, neurons, packed, tasks, langs, args.english, args.batch_size,
                              not args.no_progress)


def _task(args: argparse.Namespace, name: str, langs: list[str]):
    from langneurons.evaluation.tasks import load_task

    task = load_task(name, data=args.data, langs=langs, limit=args.limit)
    task.validate()
    return task


def run_deactivate(args: argparse.Namespace) -> int:
    from langneurons.sets.neuronset import load_neurons

    prepare_outputs(args, {"--out": args.out}, {"--model": args.model, "--neurons": args.neurons,
                                                "--eval-corpus": args.eval_corpus})
    neurons = load_neurons(args.neurons)
    plan = deactivation_plan(args, neurons)
    result = deactivation(args, _load(args), neurons, plan)
    result.save(args.out)
    print(format_deltas(result))
    print(f"wrote {args.out}")
    return 0


def format_deltas(result: Any) -> str:
    lines = []
    for metric in result.values:
        lines.append(f"{metric}: setting / method / delta_en / delta_non_en / delta_up")
        for row in result.delta_rows(metric):
            lines.append(f"  {row[0]:<28} {row[1]:<10} {row[-3]:+9.4f} {row[-2]:+9.4f} {row[-1]:+9.4f}")
    return "\n".join(lines)


def prompts_of(args: argparse.Namespace, langs: list[str] | None) -> dict[str, list[str]]:
    from langneurons.data.files import find_corpus_files
    from langneurons.recording.importance import parse_lines, read_lines

    if not 0 < args.prompt_fraction <= 1:
        raise LangNeuronsError(f"--prompt-fraction must be in (0, 1], got {args.prompt_fraction}")
    source = args.prompts or getattr(args, "eval_corpus", None)
    if not source:
        raise LangNeuronsError("the layer language needs --prompts (or --eval-corpus)")
    lines = args.prompt_lines if args.prompts else (args.prompt_lines or getattr(args, "eval_lines", None))
    prompts = {}
    for lang, path in find_corpus_files(source, langs, kind="prompt").items():
        texts = read_lines(path, parse_lines(lines))[:args.prompt_limit]
        texts = [t[:max(1, int(len(t) * args.prompt_fraction))] for t in texts]
        if not texts:
            raise LangNeuronsError(f"prompt file {str(path)!r} has no prompt")
        prompts[lang] = texts
    return prompts


def language_of_layers(args: argparse.Namespace, loaded: Any, langs: list[str] | None):
    from langneurons.analysis.layer_language import layer_language

    return layer_language(loaded, prompts_of(args, langs), args.max_new_tokens, args.top_k, args.langid,
                          args.min_confidence, args.english, batch_size=args.batch_size,
                          progress=not args.no_progress)


def run_layers(args: argparse.Namespace) -> int:
    prepare_outputs(args, {"--out": args.out}, {"--model": args.model, "--prompts": args.prompts})
    result = language_of_layers(args, _load(args), parse_langs(args.langs))
    result.save(args.out)
    print(result.summary().get("headline", ""))
    print(f"wrote {args.out}")
    return 0


def run_paper(args: argparse.Namespace) -> int:
    """identify -> overlap -> layer distribution per structure -> deactivate -> layer language -> report."""
    from langneurons.analysis.layers import layer_distribution
    from langneurons.analysis.overlap import structure_overlap
    from langneurons.report import build_report

    from langneurons.methods.plnd_neurons import SITE_OF

    root = Path(args.out)
    structures = [s.strip() for s in args.structures.split(",") if s.strip()]
    layer_parts = {f"layers_{s.replace('.', '_')}": SITE_OF.get(s, s) for s in structures}
    parts = {name: root / name for name in ("importance", "plnd.neurons", "overlap", *layer_parts, "mwork",
                                            "layer_language")}
    prepare_outputs(args, {f"--out/{name}": path for name, path in parts.items()},
                    {"--model": args.model, "--corpus": args.corpus, "--eval-corpus": args.eval_corpus,
                     "--prompts": args.prompts})
    args.importance = None
    parse_settings(args.settings)
    if not args.eval_corpus and not args.task:
        raise LangNeuronsError("plnd paper needs --eval-corpus or --task")
    loaded = _load(args)
    neurons, _ = identify_neurons(args, loaded, importance_out=str(parts["importance"]))
    neurons.save(parts["plnd.neurons"])
    structure_overlap(neurons).save(parts["overlap"])
    for name, site in layer_parts.items():
        if site in neurons.sites:
            layer_distribution(neurons.restrict(sites=[site])).save(parts[name])
    result = deactivation(args, loaded, neurons)
    result.save(parts["mwork"])
    print(format_deltas(result))
    language_of_layers(args, loaded, parse_langs(args.langs)).save(parts["layer_language"])
    report = build_report([root], root / "report.html")
    print(f"wrote {root}: {', '.join(parts)}; report {report}")
    return 0
