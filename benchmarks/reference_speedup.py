"""Speed-up of `langneurons record` over the reference codebases' approach, on the same windows.

The papers' own recordings ran at batch size 1 in float32, captured the full activation tensors with
hooks (copied to the host) and reduced them afterwards. ``reference`` re-creates that here: the whole
model (logits included) on one window at a time, every layer's ``ffn.act`` output copied out, then the
positive counts, sums and sums of squares reduced from the copies. ``record`` is the recording pass
exactly as ``langneurons record`` runs it (batched, decoder stack only, on-device reductions, early
stop). Both produce the same statistics (checked: counts equal, sums within 1e-5); they run interleaved
in this process and the medians are compared. Prints, last, ``speed-up = <reference/record>``.

    python benchmarks/reference_speedup.py [--hidden 512 --intermediate 2048 --layers 4 --threads 1]
"""

from __future__ import annotations

import argparse

import torch
from _bench import interleaved, recording_pass, summary, synthetic_setup



@torch.inference_mode()
def reference_pass(model: torch.nn.Module, site_map, windows: torch.Tensor) -> list[torch.Tensor]:
    """Batch size 1, float32, full activations captured to the host and reduced afterwards."""
    captured: list[list[torch.Tensor]] = [[] for _ in site_map.modules]
    hooks = [module.register_forward_hook(
        lambda _m, _a, output, layer=layer: captured[layer].append(output.detach().float().cpu().clone()))
        for layer, module in enumerate(site_map.modules)]
    device = next(model.parameters()).device
    try:
        positive = total = squares = None
        for window in windows:
            model(input_ids=window[None].to(device), use_cache=False)
            acts = torch.stack([torch.cat(layer_acts).reshape(-1, site_map.width) for layer_acts in captured])
            for layer_acts in captured:
                layer_acts.clear()
            counts, sums, sq = (acts > 0).sum(1), acts.sum(1, dtype=torch.float64), (acts * acts).sum(1, dtype=torch.float64)
            positive = counts if positive is None else positive + counts
            total = sums if total is None else total + sums
            squares = sq if squares is None else squares + sq
    finally:
        for hook in hooks:
            hook.remove()
    return [positive, total, squares]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args, model, windows, site_map = synthetic_setup(parser, repeats=5, batch_help="langneurons' batch size (the reference uses 1)")

    ours = recording_pass(model, site_map, windows, args.batch_size)
    theirs = reference_pass(model, site_map, windows)
    assert torch.equal(ours.positive_count[0], theirs[0]), "positive counts differ"
    for mine, reference in zip((ours.activation_sum[0], ours.activation_sq_sum[0]), theirs[1:]):
        scale = reference.abs().max()
        assert float((mine - reference).abs().max()) <= 1e-5 * float(scale), "sums differ"

    runs = {
        "reference": lambda: reference_pass(model, site_map, windows),
        "record": lambda: recording_pass(model, site_map, windows, args.batch_size),
    }
    timings = interleaved(runs, args.repeats)
    tokens = args.windows * args.seq_len
    params = sum(p.numel() for p in model.parameters())
    print(f"model: llama-shaped, {params / 1e6:.1f}M parameters, {args.layers} layers, d_model {args.hidden}, "
          f"d_ff {args.intermediate}, vocab {args.vocab}; {args.windows} windows x {args.seq_len} tokens; "
          f"reference: batch 1, float32, full capture; record: batch {args.batch_size}; "
          f"{torch.get_num_threads()} threads, device cpu, {args.repeats} interleaved repeats")
    median = summary(timings, tokens)
    print(f"min/min speed-up = {min(timings['reference']) / min(timings['record']):.2f}")
    print(f"speed-up = {median['reference'] / median['record']:.2f}")


if __name__ == "__main__":
    main()
