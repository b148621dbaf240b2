"""Recording overhead: time of `langneurons record`'s pass / time of a plain forward on the same windows.

Both run in this process on the same random-weight Llama-shaped model and the same windows, interleaved,
each repeated; the medians are compared. ``forward`` is the whole model (what a user runs without
langneurons: logits included), ``body`` the decoder stack alone without hooks, ``record`` the recording
pass exactly as ``langneurons record`` runs it (decoder stack, hooks at every layer's ``ffn.act``,
on-device reductions, stop after the last layer's site), ``record-full`` the same without the early stop
(the pure cost of hooks and reductions). Prints, last, ``record/forward = <ratio>``.

    python benchmarks/record_overhead.py [--hidden 512 --intermediate 2048 --layers 4 --seq-len 256 --threads 1]
"""

from __future__ import annotations

import argparse

import torch
from _bench import interleaved, plain_forward, recording_pass, summary, synthetic_setup



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args, model, windows, site_map = synthetic_setup(parser, repeats=7)
    runs = {
        "forward": lambda: plain_forward(model, windows, args.batch_size),
        "body": lambda: plain_forward(model, windows, args.batch_size, body_only=True),
        "record": lambda: recording_pass(model, site_map, windows, args.batch_size),
        "record-full": lambda: recording_pass(model, site_map, windows, args.batch_size, stop_early=False),
    }
    timings = interleaved(runs, args.repeats)
    tokens = args.windows * args.seq_len
    params = sum(p.numel() for p in model.parameters())
    print(f"model: llama-shaped, {params / 1e6:.1f}M parameters, {args.layers} layers, d_model {args.hidden}, "
          f"d_ff {args.intermediate}, vocab {args.vocab}, attention {model.config._attn_implementation}; "
          f"{args.windows} windows x {args.seq_len} tokens, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, device cpu, {args.repeats} interleaved repeats")
    median = summary(timings, tokens)
    for name in ("record-full", "record"):
        print(f"{name}/body = {median[name] / median['body']:.3f}   (min/min {min(timings[name]) / min(timings['body']):.3f})")
    print(f"record/forward = {median['record'] / median['forward']:.3f}")


if __name__ == "__main__":
    main()
