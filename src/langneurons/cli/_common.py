"""Options shared by several subcommands (model loading, corpus packing, run settings)."""

from __future__ import annotations

import argparse


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Hugging Face hub id or local directory of a causal LM")
    parser.add_argument("--revision", default=None, help="model revision (branch, tag or commit) on the hub")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="compute dtype (default: float32 on CPU, bfloat16 on GPU)",
    )
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model's own modelling code from the hub (only for models you trust)")
    parser.add_argument("--attn-implementation", default=None,
                        help="attention implementation: sdpa, eager, flash_attention_2, ... (default: the model's)")
    parser.add_argument(
        "--site",
        default="ffn.act",
        help="neuron site: ffn.act (act_fn output, the papers' default) or ffn.down_in (input of the down projection)",
    )


def add_placement_options(parser: argparse.ArgumentParser) -> None:
    """``--device-map`` / ``--offload-folder``: big models spread over devices (and disk) by accelerate."""
    parser.add_argument("--device-map", default=None,
                        help="accelerate device map for models larger than one device, e.g. auto")
    parser.add_argument("--offload-folder", default=None, metavar="DIR",
                        help="with --device-map: keep layers that fit on no device in DIR (loaded per forward)")


def check_placement(args: argparse.Namespace) -> None:
    from langneurons.errors import LangNeuronsError

    if args.offload_folder is not None and args.device_map is None:
        raise LangNeuronsError("--offload-folder needs --device-map (e.g. --device-map auto)")


def load_model_from_args(args: argparse.Namespace):
    """The model of ``--model`` placed by ``--device`` / ``--dtype`` / ``--device-map`` / ``--offload-folder``."""
    check_placement(args)
    from langneurons.model.loading import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype, revision=args.revision,
                      device_map=args.device_map, offload_folder=args.offload_folder,
                      trust_remote_code=getattr(args, "trust_remote_code", False),
                      attn_implementation=getattr(args, "attn_implementation", None))


def add_corpus_options(parser: argparse.ArgumentParser, corpus_help: str) -> None:
    parser.add_argument("--corpus", required=True, help=corpus_help)
    parser.add_argument("--langs", default=None, help="comma-separated languages (default: every {lang}.txt/.jsonl file)")
    parser.add_argument("--seq-len", type=int, default=None, help="window length (default: model context, at most 4096)")
    parser.add_argument("--max-tokens", type=int, default=None, help="cap on tokens per language")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")


def parse_langs(value: str | None) -> list[str] | None:
    if value is None:
        return None
    langs = [part.strip() for part in value.split(",") if part.strip()]
    return langs or None


def parse_param_items(items: list[str]) -> dict:
    """``--param NAME=VALUE`` options as a dict (values parsed as JSON when they are JSON, else strings)."""
    import json

    from langneurons.errors import LangNeuronsError

    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise LangNeuronsError(f"--param must be NAME=VALUE, got {item!r}")
        try:
            params[name.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            params[name.replace("-", "_")] = value
    return params


# -- outputs: the data-safety rule of every command ------------------------------------------------------
FORCE_HELP = "replace an existing result at the output (default: refuse with an error naming it)"


def add_force_option(parser: argparse.ArgumentParser, help: str = FORCE_HELP) -> None:
    """``--force``: the one way to replace an existing result (every command that writes has it)."""
    parser.add_argument("--force", action="store_true", help=help)


def prepare_outputs(args: argparse.Namespace, outputs, inputs: dict | None = None, containers=()) -> None:
    """Check a command's outputs before any work (see :func:`langneurons.sets.artefacts.check_outputs`).

    ``outputs``: ``{flag: path}`` (artefact folders) or :class:`~langneurons.sets.artefacts.Target` items;
    ``inputs``: ``{flag: path or [paths]}``; ``containers``: input flags that are run directories an output
    may lie in. Uses ``args.force``. Raises :class:`~langneurons.errors.LangNeuronsError` (exit 2).
    """
    from langneurons.sets.artefacts import Target, check_outputs

    if isinstance(outputs, dict):
        outputs = [Target(flag, path) for flag, path in outputs.items()]
    check_outputs(list(outputs), inputs or {}, force=bool(getattr(args, "force", False)), containers=containers)
