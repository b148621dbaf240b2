"""Peak memory of scoring a corpus with a large vocabulary: the full logits (old) vs the chunked LM head (new).

The model is a random 1-layer Llama with a large vocabulary (default 256,000, Gemma's size) and a small
hidden size, so that the logits dominate memory as they do for a real model at sequence 4096 and batch 8.

* old: ``model(...).logits`` then ``cross_entropy(logits[:, :-1].float().reshape(-1, V))``, what
  ``evaluation/perplexity.py: corpus_nll`` did before 0.2: the full ``[B, T, V]`` logits, a copy
  of them (float32 / reshape of a slice) and the log-softmax's own ``[B*T, V]`` buffer.
* new: ``langneurons.evaluation.logprobs.sequence_nll``: the model's body, then the LM head and the
  log-softmax on ``chunk_size`` positions at a time (default: 2**26 logits per chunk).

Peak memory is the peak resident set size (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` before
each run, as ``peak_memory.py`` does) above the resident size just before the run. Tensors this large are
allocated with ``mmap`` and returned to the system when freed, so resident memory follows the live
tensors; the two paths run alternately (old, new, old, new, ...) and the medians are compared. The two
NLLs are checked to agree. Prints, last, ``eval_memory new/old = <ratio>``.

    python benchmarks/eval_memory.py [--vocab 256000 --seq-len 256 --batch-size 2 --rounds 2]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from _bench import llama_shaped, random_windows
from peak_memory import peak_mib

from langneurons.evaluation.logprobs import default_chunk, sequence_nll


@torch.inference_mode()
def old_nll(model: torch.nn.Module, windows: torch.Tensor) -> float:
    """The pre-0.2 ``corpus_nll`` on one batch: full logits and a float32 copy."""
    logits = model(input_ids=windows, use_cache=False).logits
    targets = windows[:, 1:]
    return float(F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                 reduction="sum"))


def new_nll(model: torch.nn.Module, windows: torch.Tensor, chunk_size: int | None) -> float:
    nll, _ = sequence_nll(model, windows, chunk_size=chunk_size)
    return float(nll.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=256_000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=None, help="positions per chunk (default: 2**26 / vocab)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = llama_shaped(args.hidden, 2 * args.hidden, 1, args.vocab, heads=4, dtype=dtype)
    windows = random_windows(args.vocab, args.batch_size, args.seq_len)
    results: dict[str, float] = {}

    def run(name: str) -> None:
        results[name] = old_nll(model, windows) if name == "old" else new_nll(model, windows, args.chunk_size)

    run("old"), run("new")  # warm-up: kernels, allocator pools, the head-path check
    peaks: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        for name in peaks:
            peaks[name].append(peak_mib(lambda name=name: run(name)))
    tokens = args.batch_size * (args.seq_len - 1)
    if abs(results["old"] - results["new"]) > 1e-3 * tokens:
        raise SystemExit(f"the two paths disagree: old {results['old']:.4f}, new {results['new']:.4f} nats")
    logits_mib = args.batch_size * args.seq_len * args.vocab * dtype.itemsize / 2**20
    chunk = args.chunk_size or default_chunk(args.vocab)
    print(f"model: llama, 1 layer, hidden {args.hidden}, vocab {args.vocab:,}, {args.dtype}; batch {args.batch_size} "
          f"x seq {args.seq_len}; full logits {logits_mib:.0f} MiB; chunk {chunk} positions; "
          f"{torch.get_num_threads()} thread(s); median of {args.rounds} alternating rounds")
    print(f"NLL per token: old {results['old'] / tokens:.6f}, new {results['new'] / tokens:.6f}")
    for name, values in peaks.items():
        print(f"{name:>4}: peak above start {statistics.median(values):8.1f} MiB (rounds "
              + ", ".join(f"{v:.1f}" for v in values) + ")")
    ratio = max(statistics.median(peaks["new"]), 1.0) / max(statistics.median(peaks["old"]), 1.0)
    print(f"eval_memory new/old = {ratio:.3f}")


if __name__ == "__main__":
    main()
