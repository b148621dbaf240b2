"""Train a small multilingual causal LM (Llama, GPT-2 or BLOOM family) from scratch or further.

See :func:`train_toy_model`. Output folder layout::

    out/config.json, model.safetensors, tokenizer.json, ...   final model (``from_pretrained`` loads it)
    out/checkpoint-{step}/                                   intermediate checkpoints (--save-steps)
    out/train_log.jsonl                                      step, train loss, held-out ppl per language
    out/heldout_ppl.json                                     final held-out ppl vs the unigram baseline
    out/toy_train_args.json                                  the arguments of the run
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Iterable, Sequence

from langneurons.errors import LangNeuronsError

ARCHS = ("llama", "gpt2", "bloom")


def build_config(
    arch: str, vocab_size: int, hidden: int, layers: int, heads: int, intermediate: int, seq_len: int,
    bos_id: int, eos_id: int, pad_id: int,
):
    """A transformers config of the given family; embeddings tied to the output head."""
    import transformers

    if hidden % heads:
        raise LangNeuronsError(f"--hidden {hidden} is not divisible by --heads {heads}")
    ids = dict(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id, tie_word_embeddings=True)
    if arch == "llama":
        return transformers.LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=seq_len, hidden_act="silu", rms_norm_eps=1e-5, **ids,
        )
    if arch == "gpt2":
        return transformers.GPT2Config(
            vocab_size=vocab_size, n_positions=seq_len, n_embd=hidden, n_layer=layers, n_head=heads,
            n_inner=intermediate, activation_function="gelu_new", **ids,
        )
    if arch == "bloom":  # BLOOM's MLP width is fixed at 4 * hidden
        return transformers.BloomConfig(vocab_size=vocab_size, hidden_size=hidden, n_layer=layers, n_head=heads, **ids)
    raise LangNeuronsError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHS)}")


def lr_factor(step: int, warmup: int, progress: float, min_ratio: float = 0.1) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then cosine decay to ``min_ratio`` as ``progress`` goes 0 to 1."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, max(0.0, progress))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def evaluate(model, windows: dict, device: str, batch_size: int = 32, autocast: bool = False) -> dict[str, float]:
    """Held-out perplexity per language: exp(mean NLL over every scored token)."""
    import torch

    model.eval()
    out = {}
    with torch.no_grad():
        for lang, (ids, mask) in windows.items():
            total, count = 0.0, 0
            for start in range(0, len(ids), batch_size):
                x = ids[start : start + batch_size].to(device)
                m = mask[start : start + batch_size].to(device)
                with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
                    logits = model(input_ids=x, attention_mask=m).logits
                logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)
                keep = m[:, 1:].bool()
                total += float(nll[keep].sum())
                count += int(keep.sum())
            out[lang] = math.exp(total / max(1, count))
    model.train()
    return out


def _save(model, tokenizer, path: Path, dtype: str = "float32") -> None:
    import torch

    path.mkdir(parents=True, exist_ok=True)
    if dtype == "float16":
        import copy

        model = copy.deepcopy(model).to(torch.float16)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))


def check_init_from(init_from: str | Path, seq_len: int) -> None:
    """The checkpoint to continue from exists, has a config, and its context holds ``seq_len`` tokens."""
    from transformers import AutoConfig

    if not Path(init_from).is_dir():
        raise LangNeuronsError(f"--init-from checkpoint not found: {init_from}")
    try:
        config = AutoConfig.from_pretrained(str(init_from))
    except (OSError, ValueError) as exc:
        raise LangNeuronsError(f"--init-from {init_from}: cannot read its config ({exc})") from None
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and seq_len > positions:
        raise LangNeuronsError(f"--seq-len {seq_len} is longer than the context of {init_from} ({positions})")


def train_toy_model(
    corpus_dir: str | Path,
    out_dir: str | Path,
    langs: Sequence[str] | None = None,
    *,
    arch: str = "llama",
    hidden: int = 256,
    layers: int = 4,
    heads: int = 4,
    intermediate: int = 1024,
    vocab_size: int = 12000,
    seq_len: int = 128,
    steps: int = 1000,
    batch_size: int = 16,
    lr: float = 1e-3,
    warmup: int | None = None,
    weight_decay: float = 0.01,
    seed: int = 0,
    device: str = "cpu",
    save_steps: Iterable[int] | str | None = None,
    eval_every: int | None = None,
    eval_tokens: int | None = 16384,
    holdout: int = 200,
    holdout_refs: str | Path | None = None,
    init_from: str | Path | None = None,
    tokenizer_chars: int | None = 2_000_000,
    save_dtype: str = "float32",
    bf16: bool = False,
    threads: int | None = None,
    max_minutes: float | None = None,
    bos_rate: float = 0.5,
    progress: bool = True,
) -> Path:
    """Train a toy causal LM on ``corpus_dir/{lang}.txt`` and save it (with its tokenizer) in ``out_dir``.

    Languages are sampled evenly whatever their corpus size. Held-out text (last ``holdout`` lines
    or the verses listed in ``holdout_refs``) is never trained on; its perplexity is logged every
    ``eval_every`` steps (on at most ``eval_tokens`` tokens per language) and at the end on all of
    it, next to an add-one unigram baseline. ``init_from`` continues from a saved model and reuses
    its tokenizer (the architecture options are then ignored). With ``max_minutes`` training stops
    at that wall-clock budget (or ``steps``, whichever comes first) and the cosine schedule follows
    the larger of the two progress fractions. A fraction ``bos_rate`` of the training windows start
    with ``<s>``, the others are plain windows of the EOS-joined text; held-out windows have no
    ``<s>`` (as :func:`langneurons.data.corpus.pack_windows` makes them) unless ``bos_rate`` is 1.
    Returns ``out_dir``.
    """
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items()}
    import torch
    from langneurons.progress import Progress

    from langneurons.testbed import data
    from langneurons.testbed.tokenizer import load_tokenizer, train_bpe_tokenizer

    if arch not in ARCHS:
        raise LangNeuronsError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if save_dtype not in ("float32", "float16"):
        raise LangNeuronsError(f"--save-dtype must be float32 or float16, not {save_dtype!r}")
    if steps <= 0 or batch_size <= 0 or seq_len < 2:
        raise LangNeuronsError("--steps and --batch-size must be positive and --seq-len at least 2")
    save_at = set(data.parse_steps(save_steps if not isinstance(save_steps, (list, tuple, set)) else list(save_steps)))
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LangNeuronsError(f"--device {device} asked but CUDA is not available")
    if init_from is not None:
        check_init_from(init_from, seq_len)
    langs = data.corpus_langs(corpus_dir, langs)
    refs = data.read_refs_file(holdout_refs) if holdout_refs else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    splits = {lang: data.split_language(corpus_dir, lang, holdout, refs) for lang in langs}
    if init_from is not None:
        tokenizer = load_tokenizer(init_from)
    else:
        tokenizer = train_bpe_tokenizer({lang: s[0] for lang, s in splits.items()}, vocab_size, tokenizer_chars)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train_streams = {lang: data.token_stream(tokenizer, s[0]) for lang, s in splits.items()}
    held_streams = {lang: data.token_stream(tokenizer, s[1]) for lang, s in splits.items() if s[1]}
    eval_bos = bos_rate >= 1.0
    full_windows = {lang: data.eval_windows(s, seq_len, bos, pad, None, eval_bos) for lang, s in held_streams.items()}
    quick_windows = {
        lang: data.eval_windows(s, seq_len, bos, pad, eval_tokens, eval_bos) for lang, s in held_streams.items()
    }

    if init_from is not None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(init_from), dtype=torch.float32)
        cfg = model.config
        # the architecture is the checkpoint's: record it, not the (ignored) size options
        args.update(arch=cfg.model_type, hidden=cfg.hidden_size, layers=cfg.num_hidden_layers,
                    heads=cfg.num_attention_heads, intermediate=getattr(cfg, "intermediate_size", None),
                    vocab_size=len(tokenizer), tokenizer_chars=None, architecture_from=str(init_from))
    else:
        from transformers import AutoModelForCausalLM

        config = build_config(arch, len(tokenizer), hidden, layers, heads, intermediate, seq_len, bos, tokenizer.eos_token_id, pad)
        model = AutoModelForCausalLM.from_config(config)
    model.to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    (out / "toy_train_args.json").write_text(json.dumps({**args, "langs": langs, "n_params": n_params}, indent=1, default=str))

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95),
    )
    warm = warmup if warmup is not None else max(1, min(500, steps // 20))
    budget_s = max_minutes * 60 if max_minutes else None
    if not 0.0 <= bos_rate <= 1.0:
        raise LangNeuronsError(f"--bos-rate must be between 0 and 1, got {bos_rate}")
    sampler = data.WindowSampler(train_streams, seq_len, bos, seed, bos_rate)
    every = eval_every or max(1, steps // 10)
    log_path = out / "train_log.jsonl"
    log_path.write_text("")
    dev_type = torch.device(device).type

    def log(step: int, loss: float | None, ppl: dict, tokens: int, t0: float) -> None:
        rec = {"step": step, "train_loss": loss, "lr": optimizer.param_groups[0]["lr"], "tokens": tokens,
               "elapsed_s": round(time.time() - t0, 1), "heldout_ppl": ppl}
        with log_path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")

    t0 = time.time()
    tokens = 0
    running, running_n = 0.0, 0
    log(0, None, evaluate(model, quick_windows, device, autocast=bf16), 0, t0)
    bar = Progress.start("toy train", steps, "step", [(steps, "steps"), (batch_size, f"windows of {seq_len} tokens")],
                         progress, work=(steps * batch_size, "windows"))
    step = 0
    for step in range(1, steps + 1):
        frac = (step - 1) / steps
        if budget_s is not None:
            frac = max(frac, (time.time() - t0) / budget_s)
            if frac >= 1.0:
                step -= 1
                break
        decay_frac = (frac * steps - warm) / max(1, steps - warm) if budget_s is None else frac
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(step - 1, warm, decay_frac)
        ids, mask = sampler.batch(batch_size)
        ids, mask = ids.to(device), mask.to(device)
        labels = ids.masked_fill(mask == 0, -100)
        with torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise LangNeuronsError(f"training diverged at step {step} (loss {value}); try a lower --lr")
        tokens += int(mask.sum())
        running += value
        running_n += 1
        bar.update(1)
        bar.postfix(loss=f"{value:.3f}", tok_s=f"{tokens / max(1e-9, time.time() - t0):.0f}")
        if step % every == 0 and step != steps and not (budget_s and time.time() - t0 >= budget_s):
            log(step, running / running_n, evaluate(model, quick_windows, device, autocast=bf16), tokens, t0)
            running, running_n = 0.0, 0
        if step in save_at and step != steps:
            _save(model, tokenizer, out / f"checkpoint-{step}")
    bar.close()

    final = evaluate(model, full_windows, device, autocast=bf16)
    log(step, running / max(1, running_n), final, tokens, t0)
    if step in save_at:
        _save(model, tokenizer, out / f"checkpoint-{step}")
    _save(model, tokenizer, out, save_dtype)
    vocab = len(tokenizer)
    table = {
        lang: {
            "model_ppl": round(final[lang], 4),
            "unigram_ppl": round(
                data.unigram_ppl(train_streams[lang], held_streams[lang][0 if eval_bos else 1 :], vocab), 4
            ),
            "heldout_tokens": int(len(held_streams[lang])),
            "heldout_lines": len(splits[lang][1]),
            "train_tokens": int(len(train_streams[lang])),
        }
        for lang in final
    }
    summary = {
        "step": step, "n_params": n_params, "train_tokens_seen": tokens,
        "wall_s": round(time.time() - t0, 1), "tokens_per_s": round(tokens / max(1e-9, time.time() - t0), 1),
        "holdout": f"refs in {holdout_refs}" if holdout_refs else f"last {holdout} lines",
        "langs": table,
    }
    (out / "heldout_ppl.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    return out
