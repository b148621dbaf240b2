"""Shared pieces of the benchmarks: models, the recording pass exactly as ``langneurons record`` runs it, timing.

Timings on a shared machine are noisy: every benchmark runs its variants interleaved (A B C A B C ...),
repeats them and compares medians (and minima: interference only ever adds time).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from langneurons.recording.accumulator import StatsAccumulator
from langneurons.recording.recorder import model_body, run_batches, window_batches
from langneurons.model.sites import SiteMap


def llama_shaped(hidden: int, intermediate: int, layers: int, vocab: int, heads: int = 8,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A random-weight Llama of the given shape, in eval mode, built directly on ``device``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                                  max_position_embeddings=4096, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def synthetic_setup(parser, repeats: int, batch_help: str | None = None):
    """Shared options of the synthetic-model benchmarks, parsed; returns ``(args, model, windows, site_map)``.

    Options: model shape (``--hidden --intermediate --layers --vocab``), ``--seq-len --batch-size --windows
    --repeats --threads``. The model is a random Llama of that shape; the windows random token ids.
    """
    from langneurons.model.sites import locate_site

    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8, help=batch_help)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = llama_shaped(args.hidden, args.intermediate, args.layers, args.vocab)
    windows = random_windows(args.vocab, args.windows, args.seq_len)
    return args, model, windows, locate_site(model, "ffn.act")


def random_windows(vocab: int, count: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """``long[count, seq_len]`` token ids (token ids 0-2 are special in our configs)."""
    return torch.randint(3, vocab, (count, seq_len), generator=torch.Generator().manual_seed(seed))


def recording_pass(model: torch.nn.Module, site_map: SiteMap, windows: torch.Tensor, batch_size: int,
                   reduce_dtype: torch.dtype = torch.float32, stop_early: bool = True) -> StatsAccumulator:
    """One recording pass as :func:`langneurons.record` runs it (body only, early stop, on-device sums)."""
    device = next(model.parameters()).device
    stats = StatsAccumulator(["xx"], site_map.num_layers, site_map.width, device, reduce_dtype=reduce_dtype)
    run_batches(model, site_map, window_batches({"xx": windows}, batch_size), [stats], progress=False,
                stop_early=stop_early)
    return stats


@torch.inference_mode()
def plain_forward(model: torch.nn.Module, windows: torch.Tensor, batch_size: int, body_only: bool = False) -> None:
    """What a user runs without langneurons: the model (or its decoder stack) on the same batches."""
    device = next(model.parameters()).device
    module = model_body(model) if body_only else model
    for start in range(0, windows.shape[0], batch_size):
        module(input_ids=windows[start : start + batch_size].to(device), use_cache=False)


def interleaved(runs: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                synchronize: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds per call of every run, the runs interleaved ``repeats`` times after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            synchronize()
            start = time.perf_counter()
            fn()
            synchronize()
            timings[name].append(time.perf_counter() - start)
    return timings


def summary(timings: dict[str, list[float]], tokens: int) -> dict[str, float]:
    """Print median / min per run and return the medians."""
    medians = {name: statistics.median(values) for name, values in timings.items()}
    for name, values in timings.items():
        print(f"{name:>12}: median {medians[name] * 1000:9.1f} ms, min {min(values) * 1000:9.1f} ms "
              f"({tokens / medians[name]:,.0f} tokens/s)")
    return medians
