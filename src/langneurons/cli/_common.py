"""Options shared by several subcommands (model loading, corpus packing, run settings) and the CLI conventions.

Conventions every command follows (``docs/architecture.md``, "CLI conventions"):

- parsers are :class:`Parser` (``main.build_parser`` makes the top one; subcommands inherit it), whose
  :class:`HelpFormatter` shows each option's default;
- a list option is :func:`add_list_option`: ``--langs en zh`` (space-separated) and ``--langs en,zh`` (the 0.1
  form) both work, and repeating the flag adds to the list;
- outputs are checked with :func:`prepare_outputs` before any work, and ``--force`` is :func:`add_force_option`;
- long work shows one overall bar (:func:`langneurons.progress.progress_bar`), announced by one line;
- user mistakes raise :class:`~langneurons.errors.LangNeuronsError` naming the flag and file involved (exit 2).
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from typing import Any, Callable

#: what ``langneurons --help`` says about exit codes (also in the README)
EXIT_CODES = {0: "done", 2: "user error (one line on stderr naming the flag or file)", 130: "interrupted (Ctrl-C)"}
EXIT_EPILOG = "exit codes: " + ", ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())


def _show_default(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows every option's default (unless the help text already says it, or there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        said = "(default" in text.lower() or "default:" in text.lower()
        if (not action.option_strings or said or default is None or default is False
                or default == [] or default is argparse.SUPPRESS or text is argparse.SUPPRESS):
            return text
        return f"{text} (default: {_show_default(default).replace('%', '%%')})"


class Parser(argparse.ArgumentParser):
    """The parser of every langneurons (sub)command: defaults shown in the help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


class ListAction(argparse.Action):
    """A list option: space-separated values, each of which may also be comma-separated; repeating the flag adds.

    ``item_type`` converts each item (``float`` for ``--strength``); ``split_commas=False`` keeps commas (paths).
    """

    def __init__(self, option_strings: list[str], dest: str, item_type: Callable[[str], Any] = str,
                 split_commas: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("nargs", "+")
        self.item_type, self.split_commas = item_type, split_commas
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        items = []
        for value in values if isinstance(values, list) else [values]:
            parts = value.split(",") if self.split_commas else [value]
            for part in (p.strip() for p in parts):
                if not part:
                    continue
                try:
                    items.append(self.item_type(part))
                except ValueError:
                    from langneurons.errors import LangNeuronsError

                    noun = {float: "numbers", int: "whole numbers"}.get(self.item_type, "values")
                    raise LangNeuronsError(f"{option_string} must be comma-separated {noun} (or separated by "
                                           f"spaces), got {part!r}") from None
        current = getattr(namespace, self.dest, None)
        # the first use of the flag replaces the default, each further use adds
        base = [] if current is None or current is self.default else list(current)
        setattr(namespace, self.dest, base + items)


def add_list_option(parser: Any, flag: str, help: str, item_type: Callable[[str], Any] = str,
                    default: Any = None, metavar: str | None = None, required: bool = False,
                    split_commas: bool = True, dest: str | None = None) -> argparse.Action:
    """A list option in the one CLI style: ``FLAG a b`` or ``FLAG a,b`` (see :class:`ListAction`)."""
    kwargs: dict[str, Any] = {"action": ListAction, "item_type": item_type, "split_commas": split_commas,
                              "default": default, "help": help, "required": required}
    if metavar is not None:
        kwargs["metavar"] = metavar
    if dest is not None:
        kwargs["dest"] = dest
    return parser.add_argument(flag, **kwargs)


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
    add_list_option(parser, "--langs", "languages, e.g. --langs en zh (default: every {lang}.txt / .jsonl file)",
                    metavar="LANG")
    parser.add_argument("--seq-len", type=int, default=None, help="window length (default: model context, at most 4096)")
    parser.add_argument("--max-tokens", type=int, default=None, help="cap on tokens per language")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")


def parse_langs(value: str | list[str] | None) -> list[str] | None:
    """Languages of a list option (a list, or the 0.1 comma-separated string); ``None`` when not given."""
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    langs = [part.strip() for item in values for part in str(item).split(",") if part.strip()]
    return list(dict.fromkeys(langs)) or None


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


# -- inputs: checked against each other and against the model before any model time is spent ----------------
def warn_empty_languages(result: Any, label: str, unit: str = "neurons") -> None:
    """A one-line warning naming the languages of a neuron (or parameter) set that have none."""
    import warnings

    from langneurons.errors import LangNeuronsWarning

    empty = [lang for lang, n in result.sizes().items() if n == 0]
    if empty:
        warnings.warn(f"{label} has no {unit} for {', '.join(empty)}: intervening on "
                      f"{'it' if len(empty) == 1 else 'them'} changes nothing (identify with a larger --top-rate)",
                      LangNeuronsWarning, stacklevel=2)


def load_neuron_set(path: str | None, flag: str = "--neurons") -> Any:
    """The neuron set at ``path`` (``None`` when not given), with a warning naming its empty languages."""
    if path is None:
        return None
    from langneurons.sets.neuronset import load_neurons

    neurons = load_neurons(path)
    warn_empty_languages(neurons, f"{flag} {str(path)!r}")
    return neurons


def check_seq_len_early(args: argparse.Namespace, flag: str = "--seq-len") -> None:
    """``--seq-len`` against the context length in the model's config, before anything loads (one-line error)."""
    from langneurons.errors import LangNeuronsError
    from langneurons.sets.compatibility import check_context

    seq_len = getattr(args, flag.lstrip("-").replace("-", "_"), None)
    if seq_len is None:
        return
    if seq_len < 2:
        raise LangNeuronsError(f"{flag} must be at least 2, got {seq_len}")
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(args.model, revision=getattr(args, "revision", None),
                                            trust_remote_code=bool(getattr(args, "trust_remote_code", False)))
    except Exception:  # noqa: BLE001 - loading the model reports what is wrong with it
        return
    check_context(config, seq_len, f"--model {args.model!r}", flag)


def check_against_model(loaded: Any, inputs: list, args: argparse.Namespace) -> None:
    """Every artefact input against the loaded model (fingerprints; errors for another shape, warnings else)."""
    from langneurons.sets.compatibility import check_model

    check_model(inputs, loaded.model, f"--model {args.model!r}")
