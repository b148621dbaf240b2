"""A Llama-2-7B-shaped model (random weights, bfloat16) on one GPU: tokens/s of a plain forward and of recording.

Builds the model directly on the GPU (no download: 32 layers, d_model 4096, d_ff 11008, 32 heads, vocab
32000), runs the same random windows through ``forward`` (the whole model, logits included), ``body``
(the decoder stack, no hooks) and ``record`` (the recording pass exactly as ``langneurons record`` runs
it: hooks at every layer's ``ffn.act``, on-device ``direct`` reductions with float64 accumulation, stop
after the last layer), interleaved and repeated, and prints tokens/s, model FLOPs utilisation (MFU) and
peak GPU memory of each. With ``--reference-windows N`` it also times the reference codebases' approach
(float32, batch size 1, full activations copied to the host and reduced there) on N windows.

    python benchmarks/gpu_7b.py [--seq-len 4096 --batch-size 4 --windows 16 --repeats 3]
    python benchmarks/gpu_7b.py --tiny     # a smoke test of the script on any machine (CPU if no GPU)

FLOPs per token (forward, Kaplan et al. 2020): 2 x (non-embedding parameters, + the LM head for
``forward``) + 2 x layers x sequence length x d_model. Peak: the GPU's dense bf16 tensor-core peak
(H100 SXM / H200 989 TFLOP/s, H100 PCIe 756, A100 312), or ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import gc

import torch
from _bench import interleaved, llama_shaped, plain_forward, random_windows, recording_pass, summary
from reference_speedup import reference_pass

from langneurons.model.sites import locate_site

SHAPES = {
    "7b": dict(hidden=4096, intermediate=11008, layers=32, heads=32, vocab=32000),
    "tiny": dict(hidden=256, intermediate=1024, layers=4, heads=8, vocab=8000),
}
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0))


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_TFLOPS:
        if all(part in name for part in key.split()):
            return value
    return None


def flops_per_token(model: torch.nn.Module, seq_len: int, with_head: bool) -> float:
    config = model.config
    embedding = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight.numel()
    body = sum(p.numel() for p in model.parameters()) - embedding - head
    return 2.0 * (body + (head if with_head else 0)) + 2.0 * config.num_hidden_layers * seq_len * config.hidden_size


def peak_memory_gib(fn, device: torch.device) -> float:
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(device) / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-windows", type=int, default=0,
                        help="also time the reference approach (float32, batch 1, host capture) on this many windows")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak")
    parser.add_argument("--tiny", action="store_true", help="a small model, for a smoke test of this script")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.tiny:
        parser.error("no CUDA device; use --tiny for a smoke test on the CPU")
    shape = SHAPES["tiny" if args.tiny else "7b"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = llama_shaped(shape["hidden"], shape["intermediate"], shape["layers"], shape["vocab"],
                         heads=shape["heads"], dtype=dtype, device=device)
    windows = random_windows(shape["vocab"], args.windows, args.seq_len).to(device)
    site_map = locate_site(model, "ffn.act")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    runs = {
        "forward": lambda: plain_forward(model, windows, args.batch_size),
        "body": lambda: plain_forward(model, windows, args.batch_size, body_only=True),
        "record": lambda: recording_pass(model, site_map, windows, args.batch_size),
    }
    timings = interleaved(runs, args.repeats, synchronize=sync)
    tokens = args.windows * args.seq_len
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    params = sum(p.numel() for p in model.parameters())
    print(f"model: llama-shaped, {params / 1e9:.2f}B parameters, {shape['layers']} layers, d_model {shape['hidden']}, "
          f"d_ff {shape['intermediate']}, vocab {shape['vocab']}, {str(dtype).replace('torch.', '')}, "
          f"attention {model.config._attn_implementation}; {args.windows} windows x {args.seq_len} tokens, "
          f"batch {args.batch_size}; device {name}; {args.repeats} interleaved repeats")
    median = summary(timings, tokens)
    peak = peak_tflops(device, args.peak_tflops)
    for run in runs:
        flops = flops_per_token(model, args.seq_len, with_head=run == "forward") * tokens / median[run]
        mfu = f"MFU {flops / (peak * 1e12):.1%}" if peak else "MFU n/a (pass --peak-tflops)"
        memory = peak_memory_gib(runs[run], device)
        print(f"{run:>12}: {tokens / median[run]:,.0f} tokens/s, {flops / 1e12:.1f} TFLOP/s, {mfu}, "
              f"peak memory {memory:.1f} GiB")
    print(f"record/body = {median['record'] / median['body']:.3f}")
    if args.reference_windows:
        del model, runs
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        model32 = llama_shaped(shape["hidden"], shape["intermediate"], shape["layers"], shape["vocab"],
                               heads=shape["heads"], dtype=torch.float32, device=device)
        site32 = locate_site(model32, "ffn.act")
        few = windows[: args.reference_windows]
        reference = interleaved({"reference": lambda: reference_pass(model32, site32, few)}, 1, synchronize=sync)
        reference_rate = few.numel() / reference["reference"][0]
        print(f"   reference: {reference_rate:,.0f} tokens/s (float32, batch 1, full capture to the host)")
        print(f"speed-up record/reference = {tokens / median['record'] / reference_rate:.1f}")
    print(f"record/forward = {median['record'] / median['forward']:.3f}")


if __name__ == "__main__":
    main()
