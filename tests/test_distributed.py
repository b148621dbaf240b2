"""Data-parallel recording: two real torchrun processes (gloo, CPU) give the single-process statistics."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import langneurons as ln
from langneurons.recording.distributed import DistributedContext, owns_batch, setup

RECORD = ["--seq-len", "16", "--max-tokens", "176", "--batch-size", "2", "--no-progress"]


def single_thread_record(model_dir, corpus_dir, **kwargs):
    """The reference in this process, with one thread like each torchrun rank (same float kernels)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ln.record(str(model_dir), corpus_dir, seq_len=16, max_tokens=176, batch_size=2, progress=False,
                         distributed_run=False, **kwargs)
    finally:
        torch.set_num_threads(threads)


def torchrun(*args, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "langneurons", *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_gloo_processes_equal_one(llama_dir, corpus_dir, tmp_path):
    out = tmp_path / "stats"
    result = torchrun("record", "--model", llama_dir, "--corpus", corpus_dir, "--out", out, *RECORD)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1  # only rank 0 writes
    both = ln.load_stats(out)
    one = single_thread_record(llama_dir, corpus_dir)
    assert both.languages == one.languages
    assert torch.equal(both.token_count, one.token_count) and int(one.token_count[0]) == 176
    assert torch.equal(both.positive_count, one.positive_count)
    # every batch is bit-identical to the single process's; only the order of the float64 additions differs
    torch.testing.assert_close(both.activation_sum, one.activation_sum, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(both.activation_sq_sum, one.activation_sq_sum, rtol=1e-12, atol=1e-12)
    assert both.meta["parameters"]["world_size"] == 2
    rank_tokens = both.meta["rank_tokens"]
    assert len(rank_tokens) == 2 and min(rank_tokens) > 0 and sum(rank_tokens) == int(one.token_count.sum())
    assert both.meta["corpus"] == one.meta["corpus"]  # every rank saw (and counted) the whole corpus
    lape = [ln.identify(stats, method="lape", top_rate=0.05) for stats in (both, one)]
    for lang in one.languages:
        assert all(torch.equal(a, b) for a, b in zip(lape[0].layers(lang), lape[1].layers(lang)))


def test_ranks_compose_with_shards_and_checkpoints(llama_dir, corpus_dir, tmp_path):
    """Shard 1/2 recorded by two ranks with checkpoints: equal to shard 1/2 in one process; checkpoints removed."""
    out = tmp_path / "stats"
    result = torchrun("record", "--model", llama_dir, "--corpus", corpus_dir, "--out", out, *RECORD,
                      "--shard", "1/2", "--checkpoint-every", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "stats.checkpoint").exists()
    both = ln.load_stats(out)
    one = single_thread_record(llama_dir, corpus_dir, shard_index=1, num_shards=2)
    assert torch.equal(both.positive_count, one.positive_count) and torch.equal(both.token_count, one.token_count)
    torch.testing.assert_close(both.activation_sum, one.activation_sum, rtol=1e-12, atol=1e-12)


def test_merge_refuses_the_same_shard_twice(llama_dir, corpus_dir, tmp_path, capsys):
    from langneurons.cli.main import main

    record = ["record", "--model", str(llama_dir), "--corpus", str(corpus_dir), *RECORD]
    for index in (0, 1):
        assert main([*record, "--shard", f"{index}/2", "--out", str(tmp_path / f"s{index}")]) == 0
    assert main(["merge", str(tmp_path / "s0"), str(tmp_path / "s0"), "--out", str(tmp_path / "twice")]) == 2
    assert "same shard (0/2) of the same corpus" in capsys.readouterr().err and not (tmp_path / "twice").exists()
    assert main(["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "merged")]) == 0
    merged, whole = ln.load_stats(tmp_path / "merged"), single_thread_record(llama_dir, corpus_dir)
    assert torch.equal(merged.positive_count, whole.positive_count)


def test_round_robin_ownership_and_environment(monkeypatch):
    ranks = [DistributedContext(rank=r, world_size=3) for r in range(3)]
    owners = [[owns_batch(c, g) for c in ranks].index(True) for g in range(7)]
    assert owners == [0, 1, 2, 0, 1, 2, 0]  # every batch has exactly one owner
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ln.LangNeuronsError, match="invalid torchrun environment"):
        setup("cpu")
    context, device = setup("cpu", distributed=False)  # an explicit single process ignores the environment
    assert not context.is_distributed and device == "cpu"
