"""``langneurons plnd identify|overlap|deactivate|layers|paper``: PLND and the MWork workflow (Zhao et al. 2024).

``identify`` records the PLND importance of every input of a per-language corpus and selects the neurons
important for every input (section 2.3); ``overlap`` writes eq. 11 per structure (Figures 5, 6); ``deactivate``
the MWork tables (sections 3.2-3.6, Tables 2-5, 8, 9); ``layers`` the layer language by logit lens (Figure 1);
``paper`` runs them all into one run directory with its HTML report. See ``docs/plnd.md``.
"""

from __future__ import annotations

import argparse

from langneurons.cli._common import add_force_option, add_list_option, add_model_options, add_placement_options


def _model(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    add_placement_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _identification(parser: argparse.ArgumentParser, corpus_required: bool = True) -> None:
    group = parser.add_argument_group("PLND importance (section 2.2)")
    group.add_argument("--corpus", required=corpus_required,
                       help="per-language corpus: directory of {lang}.txt / {lang}.jsonl, one input per document")
    add_list_option(group, "--langs", "languages (default: every file)")
    group.add_argument("--lines", default=None, metavar="A:B", help="only lines A..B-1 (0-based) of every file")
    group.add_argument("--max-inputs", type=int, default=1000, help="inputs per language (default 1000, as the "
                       "reference code)")
    group.add_argument("--max-length", type=int, default=512, help="tokens per input (longer ones are cut)")
    group.add_argument("--mode", default="documents", choices=["documents", "windows"],
                       help="an input is a document (default) or a window of the packer (--max-length tokens)")
    group.add_argument("--add-bos", action="store_true", help="put the BOS token first in every input")
    group.add_argument("--plnd-batch-size", type=int, default=1, help="inputs per forward pass (default 1)")
    group.add_argument("--structures", default="ffn,attn.q,attn.k,attn.v", help="structures to score")
    group.add_argument("--ffn-score", default="paper", choices=["paper", "reference"],
                       help="paper: ||h_ffn[:,k]|| ||W_down[k]|| (eqs. 4-5); reference: sum |up_proj(x)| (their code)")
    group.add_argument("--memory", default="1GiB", help="bound on the attention computation's working memory")
    group.add_argument("--compute-dtype", default="float32", choices=["float32", "float64"])
    select = parser.add_argument_group("language-specific neurons (section 2.3)")
    select.add_argument("--top-rate-ffn", type=float, default=None, help="top-k per layer as a share of d_ff "
                        "(default 2000/11008, the reference code's)")
    select.add_argument("--top-rate-attn", type=float, default=None, help="as a share of each attention width "
                        "(default 1000/4096)")
    select.add_argument("--top-k-ffn", type=int, default=None, help="top-k per layer of the FFN")
    select.add_argument("--top-k-attn", type=int, default=None, help="top-k per layer of attn.q / attn.k / attn.v")
    select.add_argument("--threshold-ffn", type=float, default=None, help="importance threshold instead of top-k")
    select.add_argument("--threshold-attn", type=float, default=None, help="importance threshold instead of top-k")
    select.add_argument("--exclude-shared", action="store_true",
                        help="remove the neurons every language has (the reference code's last step)")


def _bands(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("MWork deactivation (sections 3.2-3.6)")
    group.add_argument("--understanding", default=None, help="layers: a count from the first layer or A:B "
                       "(default round(L*8/32), Appendix H scaled)")
    group.add_argument("--generation", default=None, help="a count up to the last layer or A:B (default round(L*4/32))")
    group.add_argument("--task-solving", default=None, help="A:B (default: the layers between)")
    group.add_argument("--settings", default=None, help="comma-separated settings (default under,s_attn,s_ffn,gen,"
                       "all,all_but_s_attn), or NAME=comp+comp")
    group.add_argument("--no-checks", action="store_true", help="skip the language-agnostic checks (Tables 8, 9)")
    group.add_argument("--check-setting", default="all_but_s_attn", help="setting of the checks (the paper's)")
    group.add_argument("--english", default="en", help="the English language code")
    group.add_argument("--seed", type=int, default=0, help="seed of the random neurons")
    group.add_argument("--eval-corpus", default=None, help="held-out text per language for perplexity")
    group.add_argument("--eval-lines", default=None, metavar="A:B", help="only these lines of the held-out files")
    group.add_argument("--seq-len", type=int, default=None, help="perplexity window (default: model context)")
    group.add_argument("--max-tokens", type=int, default=None, help="perplexity tokens per language")
    group.add_argument("--task", action="append", default=[], help="a task (cloze, mgsm, xquad, a file); repeatable")
    group.add_argument("--data", default=None, help="data folder of the named tasks (default ../shared/data)")
    group.add_argument("--limit", type=int, default=None, help="task items per language")
    group.add_argument("--batch-size", type=int, default=8, help="rows per forward pass of the evaluation")


def _lens(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("layer language (Figure 1)")
    group.add_argument("--prompts", default=None, help="directory of {lang}.txt prompts, one per line")
    group.add_argument("--prompt-lines", default=None, metavar="A:B", help="only these lines of the prompt files")
    group.add_argument("--prompt-limit", type=int, default=50, help="prompts per language (default 50)")
    group.add_argument("--prompt-fraction", type=float, default=1.0,
                       help="keep the first share of each prompt's characters (the model continues the rest)")
    group.add_argument("--max-new-tokens", type=int, default=32, help="answer tokens (default 32)")
    group.add_argument("--top-k", type=int, default=10, help="lens tokens per layer and position (default 10)")
    group.add_argument("--langid", default=None, help="language identifier: langdetect (default), cld3 (the "
                       "paper's; pip install cld3-py), py3langid, lingua")
    group.add_argument("--min-confidence", type=float, default=0.7, help="least probability of a label (cld3's 0.7)")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("plnd", help="PLND neurons, overlap, MWork deactivation, layer language",
                                   description="Zhao et al. 2024: PLND and the MWork workflow. See docs/plnd.md.")
    commands = parser.add_subparsers(dest="plnd_command", metavar="STEP")
    parser.set_defaults(func=lambda args: (parser.print_help(), 1)[1])
    from langneurons.cli import _plnd_run as run

    identify = commands.add_parser("identify", help="PLND importance and language-specific neurons (2.2-2.3)",
                                   description="Records the importance of every input and writes the neurons "
                                               "important for every input of a language (a neuron set).")
    _model(identify)
    _identification(identify, corpus_required=False)
    identify.add_argument("--importance", default=None, help="reuse importance saved by --save-importance")
    identify.add_argument("--save-importance", default=None, help="also write the importance statistics here")
    identify.add_argument("--out", required=True, help="output neuron set (e.g. runs/x/plnd.neurons)")
    add_force_option(identify)
    identify.set_defaults(func=run.run_identify)

    overlap = commands.add_parser("overlap", help="eq. 11 per structure (Figures 5, 6)")
    overlap.add_argument("--neurons", required=True, help="neuron set written by `plnd identify`")
    overlap.add_argument("--out", required=True, help="output directory")
    add_force_option(overlap)
    overlap.set_defaults(func=run.run_overlap)

    deactivate = commands.add_parser("deactivate", help="MWork tables: deactivation by structure and band",
                                     description="Perplexity and task accuracy with each language's neurons of "
                                                 "a structure and layer band deactivated, against random.")
    _model(deactivate)
    deactivate.add_argument("--neurons", required=True, help="neuron set written by `plnd identify`")
    add_list_option(deactivate, "--langs", "evaluated languages (default: the evaluation corpus')")
    _bands(deactivate)
    deactivate.add_argument("--out", required=True, help="output directory")
    add_force_option(deactivate)
    deactivate.set_defaults(func=run.run_deactivate)

    layers = commands.add_parser("layers", help="layer language by logit lens (Figure 1)")
    _model(layers)
    add_list_option(layers, "--langs", "prompt languages (default: every file)")
    _lens(layers)
    layers.add_argument("--english", default="en", help="the English language code")
    layers.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch")
    layers.add_argument("--out", required=True, help="output directory")
    add_force_option(layers)
    layers.set_defaults(func=run.run_layers)

    paper = commands.add_parser("paper", help="the whole paper into one run directory (+ report.html)",
                                description="identify -> overlap -> layer distribution -> deactivate -> layers -> "
                                            "report, into --out: importance/, plnd.neurons/, overlap/, layers/, "
                                            "mwork/, layer_language/, report.html.")
    _model(paper)
    _identification(paper)
    _bands(paper)
    _lens(paper)
    paper.add_argument("--out", required=True, help="run directory")
    add_force_option(paper)
    paper.set_defaults(func=run.run_paper)
