"""A Llama-2-7B-shaped model (random weights, bfloat16) on a GPU: tokens/s of a plain forward and of recording.

Builds the model directly on the GPU (no download: 32 layers, d_model 4096, d_ff 11008, 32 heads, vocab
32000) and runs the same random windows (default 16 windows of 4096 tokens, batch 8) through

* ``forward``: the whole model, logits included (what a user runs without langneurons);
* ``body``: the decoder stack, no hooks;
* ``record``: the recording pass exactly as ``langneurons record`` runs it: hooks at every layer's ``ffn.act``,
  on-device reductions of the positive counts, sums and sums of squares (``direct``, float64 accumulation),
  the forward stopped after the last layer's site;

interleaved and repeated (medians), and prints tokens/s, TFLOP/s, model FLOP utilisation (MFU) and peak GPU
memory of each, and ``record/forward`` (the aim: at most 1.10). Then

* the reference codebases' approach (``--reference-windows N``, default 2 on a GPU): float32, batch size 1,
  the full activation tensors copied to the host and reduced there; prints ``speed-up record/reference``;
* with more than one GPU (``--dp-ranks``, default: every GPU), the data-parallel recording path itself:
  ``ln.record`` in one process per GPU (nccl, the torchrun environment set by this script), the windows
  split by batch, the sums all-reduced; prints the aggregate tokens/s and the scaling efficiency against
  one GPU, and checks the positive counts against the single-GPU pass.

    python benchmarks/gpu_7b.py [--seq-len 4096 --batch-size 8 --windows 16 --repeats 3] [--json result.json]
    python benchmarks/gpu_7b.py --cpu-smoke [--dp-ranks 2]   # the same code paths on the CPU in seconds

FLOPs per token (forward, Kaplan et al. 2020): 2 x (non-embedding parameters, + the LM head for
``forward``) + 2 x layers x sequence length x d_model. Peak: the GPU's dense bf16 tensor-core peak
(H100 SXM / H200 989 TFLOP/s, H100 PCIe 756, A100 312), or ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import socket
import sys

import torch
from _bench import interleaved, llama_shaped, plain_forward, random_windows, recording_pass, summary
from reference_speedup import reference_pass

from langneurons.model.sites import locate_site

SHAPES = {
    "7b": dict(hidden=4096, intermediate=11008, layers=32, heads=32, vocab=32000),
    "tiny": dict(hidden=256, intermediate=1024, layers=4, heads=8, vocab=8000),
    "smoke": dict(hidden=64, intermediate=256, layers=2, heads=4, vocab=512),
}
SMOKE = dict(seq_len=64, batch_size=2, windows=4, repeats=1, reference_windows=1)
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dp_worker(rank: int, world: int, port: int, shape: dict, args: argparse.Namespace, queue) -> None:
    """One rank of the data-parallel recording: ``ln.record`` under the environment torchrun would set."""
    import time

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    import langneurons as ln
    from langneurons.data.corpus import PackedCorpus
    from langneurons.recording import distributed

    cuda = torch.cuda.is_available()
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)
    dtype = torch.bfloat16 if cuda else torch.float32
    model = llama_shaped(shape["hidden"], shape["intermediate"], shape["layers"], shape["vocab"],
                         heads=shape["heads"], dtype=dtype, device=device)
    windows = random_windows(shape["vocab"], args.windows, args.seq_len)
    corpus = PackedCorpus({"xx": windows}, {}, args.seq_len, None)

    def once():
        return ln.record(model, corpus, batch_size=args.batch_size, tokenizer=object(), device=device,
                         progress=False, reduction="direct" if cuda else None)

    stats = once()  # warm-up; opens the process group (nccl on CUDA, gloo on the CPU)
    context = distributed.environment_context()
    seconds = []
    for _ in range(args.repeats):
        distributed.barrier(context)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        stats = once()  # includes the all-reduce of the sums
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    if rank == 0:
        queue.put({"seconds": sorted(seconds)[len(seconds) // 2], "positive": int(stats.positive_count.sum()),
                   "tokens": int(stats.token_count.sum()), "rank_tokens": stats.meta.get("rank_tokens"),
                   "backend": context.backend})
    distributed.barrier(context)
    import torch.distributed as dist

    dist.destroy_process_group()


def data_parallel(world: int, shape: dict, args: argparse.Namespace) -> dict:
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.start_processes(dp_worker, args=(world, _free_port(), shape, args, queue), nprocs=world, join=True,
                       start_method="spawn")
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-windows", type=int, default=None,
                        help="time the reference approach (float32, batch 1, host capture) on this many windows "
                             "(default 2 on a GPU; 0 skips it)")
    parser.add_argument("--dp-ranks", type=int, default=None,
                        help="processes of the data-parallel recording (default: every GPU when more than one)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak")
    parser.add_argument("--tiny", action="store_true", help="a small model on the GPU (or CPU)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="every code path with a tiny model on the CPU, in seconds (a test of this script)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()

    cuda = torch.cuda.is_available() and not args.cpu_smoke
    if not cuda and not (args.tiny or args.cpu_smoke):
        parser.error("no CUDA device: this benchmark measures a 7B model on a GPU; "
                     "--cpu-smoke runs its code paths on the CPU with a tiny model")
    if args.cpu_smoke:
        for key, value in SMOKE.items():
            if parser.get_default(key) == getattr(args, key):
                setattr(args, key, value)
        torch.set_num_threads(1)
    device = torch.device("cuda" if cuda else "cpu")
    shape = SHAPES["smoke" if args.cpu_smoke else "tiny" if args.tiny else "7b"]
    reference_windows = args.reference_windows if args.reference_windows is not None else (2 if cuda else 0)
    dp_ranks = args.dp_ranks if args.dp_ranks is not None else (torch.cuda.device_count() if cuda else 0)
    dtype = torch.bfloat16 if cuda else torch.float32
    model = llama_shaped(shape["hidden"], shape["intermediate"], shape["layers"], shape["vocab"],
                         heads=shape["heads"], dtype=dtype, device=device)
    windows = random_windows(shape["vocab"], args.windows, args.seq_len).to(device)
    site_map = locate_site(model, "ffn.act")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    runs = {
        "forward": lambda: plain_forward(model, windows, args.batch_size),
        "body": lambda: plain_forward(model, windows, args.batch_size, body_only=True),
        "record": lambda: recording_pass(model, site_map, windows, args.batch_size),
    }
    timings = interleaved(runs, args.repeats, synchronize=sync)
    tokens = args.windows * args.seq_len
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    params = sum(p.numel() for p in model.parameters())
    print(f"model: llama-shaped, {params / 1e9:.2f}B parameters, {shape['layers']} layers, d_model {shape['hidden']}, "
          f"d_ff {shape['intermediate']}, vocab {shape['vocab']}, {str(dtype).replace('torch.', '')}, "
          f"attention {model.config._attn_implementation}; {args.windows} windows x {args.seq_len} tokens, "
          f"batch {args.batch_size}; device {name}; {args.repeats} interleaved repeats")
    median = summary(timings, tokens)
    peak = peak_tflops(device, args.peak_tflops)
    result: dict = {"date": datetime.date.today().isoformat(), "device": name, "parameters": params,
                    "dtype": str(dtype).replace("torch.", ""), "seq_len": args.seq_len, "batch_size": args.batch_size,
                    "windows": args.windows, "repeats": args.repeats, "runs": {}}
    for run in runs:
        rate = tokens / median[run]
        flops = flops_per_token(model, args.seq_len, with_head=run == "forward") * rate
        mfu = flops / (peak * 1e12) if peak else None
        memory = peak_memory_gib(runs[run], device)
        result["runs"][run] = {"tokens_per_s": rate, "tflops": flops / 1e12, "mfu": mfu, "peak_memory_gib": memory}
        print(f"{run:>12}: {rate:,.0f} tokens/s, {flops / 1e12:.1f} TFLOP/s, "
              f"{f'MFU {mfu:.1%}' if mfu else 'MFU n/a (pass --peak-tflops)'}, peak memory {memory:.1f} GiB")
    result["record_over_body"] = median["record"] / median["body"]
    print(f"record/body = {result['record_over_body']:.3f}")
    single_positive = int(recording_pass(model, site_map, windows, args.batch_size).positive_count.sum())
    if reference_windows:
        del model, runs
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        model32 = llama_shaped(shape["hidden"], shape["intermediate"], shape["layers"], shape["vocab"],
                               heads=shape["heads"], dtype=torch.float32, device=device)
        site32 = locate_site(model32, "ffn.act")
        few = windows[:reference_windows]
        reference = interleaved({"reference": lambda: reference_pass(model32, site32, few)}, 1, synchronize=sync)
        memory = peak_memory_gib(lambda: reference_pass(model32, site32, few), device)
        reference_rate = few.numel() / reference["reference"][0]
        result["reference"] = {"tokens_per_s": reference_rate, "windows": reference_windows, "peak_memory_gib": memory}
        result["speed_up"] = tokens / median["record"] / reference_rate
        print(f"   reference: {reference_rate:,.0f} tokens/s (float32, batch 1, full capture to the host), "
              f"peak memory {memory:.1f} GiB")
        print(f"speed-up record/reference = {result['speed_up']:.1f}")
        del model32
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    if dp_ranks > 1:
        dp = data_parallel(dp_ranks, shape, args)
        rate = dp["tokens"] / dp["seconds"]
        single = tokens / median["record"]
        dp.update(ranks=dp_ranks, tokens_per_s=rate, efficiency=rate / (dp_ranks * single))
        result["data_parallel"] = dp
        if dp["positive"] != single_positive or dp["tokens"] != tokens:
            sys.exit(f"data-parallel recording differs from one process: {dp['positive']} positive activations "
                     f"vs {single_positive}, {dp['tokens']} tokens vs {tokens}")
        print(f"data parallel: {dp_ranks} ranks ({dp['backend']}), {rate:,.0f} tokens/s, "
              f"scaling efficiency {dp['efficiency']:.2f}, rank tokens {dp['rank_tokens']}; counts equal one process")
    result["record_over_forward"] = median["record"] / median["forward"]
    print(f"record/forward = {result['record_over_forward']:.3f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
