"""Peak memory of ``ln.plnd_importance`` on a 4096-token input of a model shaped like one 7B layer, against a bound.

The model is a random one-layer Llama with Llama-2-7B's layer shape (hidden 4096, 32 heads of 128, d_ff 11008;
``--kv-heads 8`` for a Mistral-style grouped-query layer) and a small vocabulary, float32 on the CPU (or
``--device cuda``). The reference code builds an ``H x d_head x L x L`` tensor per layer for Q and K (printed for
contrast); ``plnd_importance`` chunks query positions so that its working memory stays under
``memory_bytes``. Measured: the peak resident memory (CPU: ``VmHWM`` after a reset through
``/proc/self/clear_refs``; CUDA: ``max_memory_allocated``) of a plain forward pass of the input and of
``plnd_importance``, both above the memory before the call. The bound holds when PLND's peak is at most the
forward pass's peak plus the bound. Prints the peaks, the bound and ``within bound: yes|no`` last.

    python benchmarks/plnd_memory.py [--seq-len 4096 --bound 512MiB --kv-heads 32 --threads 2 --device cpu]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import re
import time
from pathlib import Path

import torch


def _rss_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def peak_bytes(fn, device: torch.device) -> tuple[int, float]:
    """Peak memory while ``fn`` runs above the memory just before, in bytes, and the seconds it took."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before = _rss_kib("VmRSS") * 1024
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = _rss_kib("VmHWM") * 1024
    return peak - before, time.perf_counter() - start


def main() -> None:
    from langneurons.cli._plnd_run import parse_memory
    from langneurons.methods.plnd import plnd_importance
    from langneurons.recording.recorder import model_body

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--bound", default="512MiB", help="memory_bytes given to plnd_importance")
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=32)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoConfig, AutoModelForCausalLM

    device = torch.device(args.device)
    config = AutoConfig.for_model("llama", vocab_size=args.vocab, hidden_size=args.hidden,
                                  intermediate_size=args.intermediate, num_hidden_layers=1,
                                  num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                                  max_position_embeddings=max(4096, args.seq_len))
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa").eval()
    ids = torch.randint(3, args.vocab, (args.seq_len,), generator=torch.Generator().manual_seed(0))
    bound = parse_memory(args.bound)
    head_dim = args.hidden // args.heads
    reference = (args.heads + args.kv_heads) * head_dim * args.seq_len ** 2 * 4
    print(f"model: one layer, hidden {args.hidden}, {args.heads} heads / {args.kv_heads} kv heads of {head_dim}, "
          f"d_ff {args.intermediate}, float32 on {device}; input {args.seq_len} tokens")
    print(f"the reference code's H x d_head x L x L tensors for Q and K: {reference / 2**30:,.0f} GiB")

    def forward() -> None:
        with torch.inference_mode():
            model_body(model)(input_ids=ids[None].to(device), use_cache=False)

    forward_peak, forward_s = peak_bytes(forward, device)
    result: dict = {}
    plnd_peak, plnd_s = peak_bytes(lambda: result.update(plnd_importance(model, ids, memory_bytes=bound)), device)
    assert set(result) == {"ffn", "attn.q", "attn.k", "attn.v"} and all(bool(v.isfinite().all())
                                                                        for v in result.values())
    print(f"forward pass:     peak {forward_peak / 2**20:9.1f} MiB above the start, {forward_s:8.1f} s")
    print(f"plnd_importance:  peak {plnd_peak / 2**20:9.1f} MiB above the start, {plnd_s:8.1f} s")
    print(f"plnd over the forward pass: {(plnd_peak - forward_peak) / 2**20:.1f} MiB; bound {bound / 2**20:.1f} MiB")
    print(f"within bound: {'yes' if plnd_peak <= forward_peak + bound else 'no'}")


if __name__ == "__main__":
    main()
