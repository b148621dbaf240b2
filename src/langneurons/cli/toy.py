"""``langneurons toy train``: train a small multilingual causal LM and its BPE tokenizer."""

from __future__ import annotations

import argparse

from langneurons.cli._common import add_force_option, add_list_option, parse_langs


def add_parser(subparsers) -> None:
    """Register ``toy`` and its nested ``train`` subcommand."""
    toy = subparsers.add_parser("toy", help="train small toy models (tokenizer + causal LM)")
    sub = toy.add_subparsers(dest="toy_command", metavar="SUBCOMMAND")
    toy.set_defaults(func=lambda args: (toy.print_help(), 2)[1])
    p = sub.add_parser(
        "train",
        help="train a byte-level BPE tokenizer and a small causal LM on {lang}.txt files",
        description="Train a byte-level BPE tokenizer and a small causal LM (Llama, GPT-2 or BLOOM family) on "
        "CORPUS/{lang}.txt (one document per line), languages sampled evenly. Saves a from_pretrained folder.",
    )
    p.add_argument("--corpus", required=True, help="folder of {lang}.txt files, one document (verse) per line")
    add_list_option(p, "--langs", "languages, e.g. --langs en zh (default: every {lang}.txt)", metavar="LANG")
    p.add_argument("--out", required=True, help="output folder (final model, checkpoints, logs)")
    p.add_argument("--arch", default="llama", choices=["llama", "gpt2", "bloom"], help="model family")
    p.add_argument("--hidden", type=int, default=256, help="hidden size")
    p.add_argument("--layers", type=int, default=4, help="number of layers")
    p.add_argument("--heads", type=int, default=4, help="attention heads")
    p.add_argument("--intermediate", type=int, default=1024, help="FFN width (ignored by bloom: 4*hidden)")
    p.add_argument("--vocab-size", type=int, default=12000, help="BPE vocabulary size")
    p.add_argument("--seq-len", type=int, default=128, help="training window length, BOS included")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=16, help="windows per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW, warmup + cosine)")
    p.add_argument("--warmup", type=int, default=None, help="warmup steps (default: 5%% of steps, at most 500)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (matrices only)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPUs with AVX512-BF16/AMX, GPUs)")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock training budget; the cosine schedule ends with it")
    p.add_argument("--bos-rate", type=float, default=0.5, help="fraction of training windows starting with <s> (held-out windows have none unless 1)")
    add_list_option(p, "--save-steps", "steps to save out/checkpoint-{step}/, e.g. --save-steps 500 1000",
                    item_type=int, metavar="STEP")
    p.add_argument("--eval-every", type=int, default=None, help="held-out evaluation period (default: steps/10)")
    p.add_argument("--eval-tokens", type=int, default=16384, help="held-out tokens per language in periodic evals (the final eval uses all)")
    p.add_argument("--holdout", type=int, default=200, help="last N lines of each language held out")
    p.add_argument("--holdout-refs", default=None, help="file of references to hold out instead (needs {lang}.refs)")
    p.add_argument("--init-from", default=None, help="continue training a saved model (reuses its tokenizer)")
    p.add_argument("--tokenizer-chars", type=int, default=2_000_000, help="max characters per language for tokenizer training")
    p.add_argument("--save-dtype", default="float32", choices=["float32", "float16"], help="dtype of the final saved weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_force_option(p, "train into --out even when it holds a previous toy model (its files are overwritten)")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Run ``toy train`` from parsed arguments."""
    from langneurons.cli._common import prepare_outputs
    from langneurons.sets.artefacts import Target
    from langneurons.testbed.train import train_toy_model

    prepare_outputs(args, [Target("--out", args.out, role="folder", marker="toy_train_args.json")],
                    {"--corpus": args.corpus, "--init-from": args.init_from, "--holdout-refs": args.holdout_refs})
    out = train_toy_model(
        args.corpus, args.out, parse_langs(args.langs),
        arch=args.arch, hidden=args.hidden, layers=args.layers, heads=args.heads,
        intermediate=args.intermediate, vocab_size=args.vocab_size, seq_len=args.seq_len, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
        seed=args.seed, device=args.device, save_steps=args.save_steps, eval_every=args.eval_every,
        eval_tokens=args.eval_tokens, holdout=args.holdout, holdout_refs=args.holdout_refs,
        init_from=args.init_from, tokenizer_chars=args.tokenizer_chars, save_dtype=args.save_dtype,
        bf16=args.bf16, threads=args.threads, max_minutes=args.max_minutes, bos_rate=args.bos_rate, progress=not args.no_progress,
    )
    print(f"saved model and tokenizer to {out} (held-out perplexities in {out / 'heldout_ppl.json'})")
    return 0
