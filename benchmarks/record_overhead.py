"""Recording overhead: time of `langneurons record`'s pass / time of a plain forward on the same windows.

Both run in this process on the same random-weight Llama-shaped model and the same windows, interleaved,
each repeated; the medians are compared. Prints, last, ``record/forward = <ratio>``.

    python benchmarks/record_overhead.py [--hidden 512 --intermediate 2048 --layers 4 --seq-len 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from langneurons.recorder import model_body, run_statistics
from langneurons.sites import locate_site
from langneurons.stats import ActivationStats
from langneurons.testing import tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = tiny_model("llama", vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                       num_hidden_layers=args.layers, num_attention_heads=8, num_key_value_heads=8)
    windows = torch.randint(3, args.vocab, (args.windows, args.seq_len), generator=torch.Generator().manual_seed(0))
    site_map = locate_site(model, "ffn.act")
    body = model_body(model)

    @torch.inference_mode()
    def plain_forward() -> None:  # what a user runs without langneurons: the full model, batched
        for start in range(0, args.windows, args.batch_size):
            model(input_ids=windows[start : start + args.batch_size], use_cache=False)

    @torch.inference_mode()
    def body_forward() -> None:  # the same decoder stack the recorder runs, without hooks
        for start in range(0, args.windows, args.batch_size):
            body(input_ids=windows[start : start + args.batch_size], use_cache=False)

    def recording() -> None:
        stats = ActivationStats.empty(["xx"], site_map.num_layers, site_map.width)
        run_statistics(model, site_map, {"xx": windows}, [stats], batch_size=args.batch_size, progress=False)

    timings: dict[str, list[float]] = {"forward": [], "body": [], "record": []}
    runs = {"forward": plain_forward, "body": body_forward, "record": recording}
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in timings.items()}
    tokens = args.windows * args.seq_len
    params = sum(p.numel() for p in model.parameters())
    print(f"model: llama-shaped, {params / 1e6:.1f}M parameters, {args.layers} layers, d_ff {args.intermediate}, "
          f"vocab {args.vocab}; {args.windows} windows x {args.seq_len} tokens, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, device cpu")
    for name in runs:
        print(f"{name:>8}: {median[name] * 1000:8.1f} ms  ({tokens / median[name]:,.0f} tokens/s)")
    print(f"record/body = {median['record'] / median['body']:.3f}   (hook overhead on the same decoder stack)")
    print(f"record/forward = {median['record'] / median['forward']:.3f}")


if __name__ == "__main__":
    main()
