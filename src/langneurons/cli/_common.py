"""Options shared by several subcommands (model loading, corpus packing, run settings)."""

from __future__ import annotations

import argparse
from contextlib import contextmanager


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Hugging Face hub id or local directory of a causal LM")
    add_loading_options(parser)
    parser.add_argument(
        "--site",
        default="ffn.act",
        help="neuron site: ffn.act (act_fn output, the papers' default) or ffn.down_in (input of the down projection)",
    )


def add_loading_options(parser: argparse.ArgumentParser) -> None:
    """How ``--model`` loads: ``--revision --device --dtype --trust-remote-code --attn-implementation``
    (every command that runs a model has them; :func:`load_model_from_args` reads them)."""
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


def add_placement_options(parser: argparse.ArgumentParser) -> None:
    """``--device-map`` / ``--offload-folder``: big models spread over devices (and disk) by accelerate."""
    parser.add_argument("--device-map", default=None,
                        help="accelerate device map for models larger than one device, e.g. auto")
    parser.add_argument("--offload-folder", default=None, metavar="DIR",
                        help="with --device-map: keep layers that fit on no device in DIR (loaded per forward)")


def check_placement(args: argparse.Namespace) -> None:
    from langneurons.errors import LangNeuronsError

    if getattr(args, "offload_folder", None) is not None and getattr(args, "device_map", None) is None:
        raise LangNeuronsError("--offload-folder needs --device-map (e.g. --device-map auto)")


def load_model_from_args(args: argparse.Namespace):
    """The model of ``--model`` placed by ``--device`` / ``--dtype`` / ``--device-map`` / ``--offload-folder``."""
    check_placement(args)
    from langneurons.model.loading import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype, revision=getattr(args, "revision", None),
                      device_map=getattr(args, "device_map", None), offload_folder=getattr(args, "offload_folder", None),
                      trust_remote_code=getattr(args, "trust_remote_code", False),
                      attn_implementation=getattr(args, "attn_implementation", None))


def require_attention(loaded, needs: str, command: str) -> None:
    """A one-line error when the model's attention implementation cannot give what ``command`` needs.

    ``needs``: ``"capture"`` (queries / keys / the mask at the attention function:
    :func:`langneurons.model.attention.capture_attention`) or ``"weights"`` (attention probabilities,
    ``output_attentions=True``, which only the eager implementation returns).
    """
    from langneurons.errors import LangNeuronsError

    model = loaded.model if hasattr(loaded, "model") else loaded
    implementation = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if needs == "weights":
        if implementation not in (None, "eager"):
            raise LangNeuronsError(f"{command} needs attention weights (output_attentions), which "
                                   f"attn_implementation={implementation!r} does not return; "
                                   "add --attn-implementation eager")
        return
    if needs != "capture":
        raise ValueError(f"unknown attention need {needs!r}")
    from langneurons.model.attention import attention_capture_problem

    problem = attention_capture_problem(model)
    if problem is not None:
        hint = "" if implementation in ("sdpa", "eager") else "; try --attn-implementation sdpa or eager"
        raise LangNeuronsError(f"{command} cannot read the attention of this model: {problem}{hint}")


# -- data-parallel, resumable runs: one mechanism for every command ----------------------------------------
def add_resume_options(parser: argparse.ArgumentParser, unit: str = "batches") -> None:
    """``--checkpoint-every N``, ``--checkpoint-dir``, ``--resume`` (as ``langneurons record`` has them)."""
    parser.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                        help=f"keep the finished work on disk every N {unit} per rank (and after every condition "
                             "and language)")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="where checkpoints go (default: OUT.checkpoint next to --out)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoints of a killed run (start afresh when there are none)")


def checkpoint_dir(args: argparse.Namespace):
    """The checkpoint folder of a command, or ``None`` when it keeps none."""
    from langneurons.recording.checkpoint import default_checkpoint_dir

    if getattr(args, "checkpoint_dir", None):
        return args.checkpoint_dir
    if getattr(args, "checkpoint_every", None) is not None or getattr(args, "resume", False):
        return default_checkpoint_dir(args.out)
    return None


def with_checkpoints(args: argparse.Namespace, outputs: dict) -> list:
    """``outputs`` (``{flag: path}``) and the checkpoint folder, as :func:`prepare_outputs` targets."""
    from langneurons.sets.artefacts import Target

    targets = [Target(flag, path) for flag, path in outputs.items()]
    directory = checkpoint_dir(args)
    if directory is not None:
        targets.append(Target("--checkpoint-dir", directory, role="workdir"))
    return targets


_UNFINGERPRINTED = {"func", "resume", "checkpoint_every", "checkpoint_dir", "no_progress", "force", "out", "device",
                    "judge_timeout", "judge_retries"}


def _tree_sha256(path) -> str | None:
    """SHA-256 over the relative names and contents of every file under ``path`` (a file: its own)."""
    import hashlib
    from pathlib import Path

    root = Path(path)
    if not root.exists():
        return None
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    hasher = hashlib.sha256()
    for file in files:
        hasher.update(str(file.relative_to(root) if file != root else file.name).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
    return hasher.hexdigest()


@contextmanager
def command_run(args: argparse.Namespace, inputs: dict | None = None, cache: bool = True):
    """The data-parallel run of one command (see :mod:`langneurons.recording.parallel_run`).

    Joins torchrun's process group when there is one (``args.device`` becomes this rank's device), keeps the
    ``normal`` condition's cache in ``RUN/.langneurons-cache/normal`` next to ``--out`` (unless that lies inside
    an input), makes the run current for the library calls inside and closes the process group at the end.
    Use :func:`start_checkpoints` once the model is loaded, and ``run.finish()`` once the result is written.
    """
    from pathlib import Path

    from langneurons.recording import distributed
    from langneurons.recording.parallel_run import ParallelRun, use_run
    from langneurons.recording.progress import ResultCache, default_cache_dir

    context, device = distributed.setup(getattr(args, "device", None))
    if context.is_distributed and getattr(args, "device_map", None) is not None:
        distributed.teardown(context)
        from langneurons.errors import LangNeuronsError

        raise LangNeuronsError("--device-map cannot be combined with data-parallel ranks (torchrun); "
                               "run one process per model copy")
    args.device = device
    store = None
    if cache and getattr(args, "out", None):
        directory = default_cache_dir(args.out).resolve()
        sources = [Path(str(p)).expanduser().resolve() for value in (inputs or {}).values()
                   for p in (value if isinstance(value, (list, tuple)) else [value]) if p]
        if not any(directory == source or source in directory.parents for source in sources):
            store = ResultCache(directory)
    run = ParallelRun(context, store)
    try:
        with use_run(run):
            yield run
    finally:
        distributed.teardown(context)


def start_checkpoints(run, args: argparse.Namespace, loaded, inputs: dict | None = None,
                      extra: dict | None = None) -> None:
    """With ``--checkpoint-every`` / ``--resume``: keep the finished units under :func:`checkpoint_dir`, checked
    against the run's fingerprint (command, options, input checksums, model, langneurons version)."""
    directory = checkpoint_dir(args)
    if directory is None:
        return
    from langneurons._version import __version__
    from langneurons.recording.parallel_run import model_key

    options = {key: value for key, value in sorted(vars(args).items())
               if key not in _UNFINGERPRINTED and not callable(value)}
    files = {flag: [_tree_sha256(p) for p in path] if isinstance(path, (list, tuple)) else _tree_sha256(path)
             for flag, path in (inputs or {}).items() if flag != "--model" and path is not None}
    fingerprint = {"command": options.pop("command", None), "options": options, "inputs": files,
                   "model": model_key(loaded.model), "langneurons": __version__, **(extra or {})}
    run.checkpoint(directory, fingerprint, getattr(args, "checkpoint_every", None), getattr(args, "resume", False))


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
