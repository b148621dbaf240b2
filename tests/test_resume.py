"""Resumable recording: a SIGKILLed run resumed from its checkpoint equals an uninterrupted one, bit for bit;
corrupt, inconsistent or foreign checkpoints are reported, never used."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import torch

import langneurons as ln
from langneurons.recording.checkpoint import CheckpointStore
from langneurons.cli.main import main

FIELDS = ("positive_count", "activation_sum", "activation_sq_sum", "token_count")
PARAMS = dict(seq_len=16, max_tokens=160, batch_size=1)  # 3 languages x 10 windows = 30 batches
CLI_PARAMS = ["--seq-len", "16", "--max-tokens", "160", "--batch-size", "1", "--no-progress"]

# The child is the real `langneurons record`, slowed down after every batch and stalled inside batch 12 (its
# statistics already added, its checkpoint not yet written), so that the kill always lands mid-run.
CHILD = """
import sys, time
from langneurons.recording.accumulator import StatsAccumulator
end_batch, calls = StatsAccumulator.end_batch, [0]
def slow_end_batch(self):
    end_batch(self)
    calls[0] += 1
    time.sleep(600 if calls[0] == 13 else float(sys.argv[1]))
StatsAccumulator.end_batch = slow_end_batch
from langneurons.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@contextmanager
def one_thread():
    """One thread, as in the child process, so every batch computes with the same float kernels."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def assert_identical(a, b) -> None:
    assert a.languages == b.languages
    for name in FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def steps(directory) -> list[int]:
    root = directory / "rank-0"
    if not root.is_dir():
        return []
    return sorted(int(p.name.split("-")[1]) for p in root.iterdir() if p.name.startswith("step-"))


def test_sigkill_then_resume_equals_uninterrupted(llama_dir, corpus_dir, tmp_path):
    out, checkpoints = tmp_path / "stats", tmp_path / "stats.checkpoint"
    args = ["record", "--model", str(llama_dir), "--corpus", str(corpus_dir), "--out", str(out), *CLI_PARAMS,
            "--checkpoint-every", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, "0.02", *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while 12 not in steps(checkpoints):  # the fourth checkpoint (after 12 of 30 batches)
        assert child.poll() is None, child.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert not out.exists()  # nothing half-written
    assert steps(checkpoints)[-1] == 12

    with one_thread():
        assert main([*args, "--resume"]) == 0
        uninterrupted = ln.record(str(llama_dir), corpus_dir, progress=False, **PARAMS)
    resumed = ln.load_stats(out)
    assert_identical(resumed, uninterrupted)
    assert resumed.meta["resumed_from_batch"] == 12  # batch 12, summed in memory but lost with it, ran again
    assert resumed.meta["corpus"] == uninterrupted.meta["corpus"]
    assert not checkpoints.exists()  # removed once the result was saved


@pytest.fixture
def finished_run(llama_dir, corpus_dir, tmp_path):
    """A recording with checkpoints every 4 windows, its final and previous checkpoints left on disk."""
    directory = tmp_path / "ckpt"
    with one_thread():
        stats = ln.record(str(llama_dir), corpus_dir, progress=False, checkpoint_dir=directory,
                          checkpoint_every=4, **PARAMS)
    return stats, directory


def test_resume_from_the_previous_checkpoint_in_process(finished_run, llama_dir, corpus_dir):
    stats, directory = finished_run
    assert steps(directory) == [28, 30]  # the two newest: periodic (28 windows) and final
    shutil.rmtree(directory / "rank-0" / "step-000000000030")
    with one_thread():
        resumed = ln.record(str(llama_dir), corpus_dir, progress=False, checkpoint_dir=directory, resume=True,
                            **PARAMS)
    assert_identical(resumed, stats)
    assert resumed.meta["resumed_from_batch"] == 28
    CheckpointStore(directory).clear()
    assert not directory.exists()


def test_truncated_checkpoint_is_reported(finished_run, llama_dir, corpus_dir, tmp_path, capsys):
    _, directory = finished_run
    tensors = directory / "rank-0" / "step-000000000030" / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-100])
    out = tmp_path / "out"
    code = main(["record", "--model", str(llama_dir), "--corpus", str(corpus_dir), "--out", str(out), *CLI_PARAMS,
                 "--checkpoint-dir", str(directory), "--resume"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("langneurons record:")]
    assert code == 2 and len(errors) == 1 and not out.exists()
    assert "cannot be used" in errors[0] and "checksum does not match" in errors[0]
    assert "resume from the checkpoint before it" in errors[0]


def test_inconsistent_and_foreign_checkpoints_are_reported(finished_run, llama_dir, corpus_dir):
    _, directory = finished_run
    with pytest.raises(ln.LangNeuronsError, match=r"different run \(batch_size: 1 there, 2 now\)"):
        ln.record(str(llama_dir), corpus_dir, progress=False, checkpoint_dir=directory, resume=True,
                  **{**PARAMS, "batch_size": 2})
    with pytest.raises(ln.LangNeuronsError, match="holds checkpoints of an earlier run"):
        ln.record(str(llama_dir), corpus_dir, progress=False, checkpoint_dir=directory, checkpoint_every=4, **PARAMS)
    meta_path = directory / "rank-0" / "step-000000000030" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["position"]["tokens_done"] -= 16  # an edited position no longer matches the checksummed tensors
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ln.LangNeuronsError, match="inconsistent: 480 tokens in the tensors, 464 in meta.json"):
        ln.record(str(llama_dir), corpus_dir, progress=False, checkpoint_dir=directory, resume=True, **PARAMS)
    meta_path.write_text("{not json")
    with pytest.raises(ln.LangNeuronsError, match="not JSON"):
        ln.record(str(llama_dir), corpus_dir, progress=False, checkpoint_dir=directory, resume=True, **PARAMS)


def test_resume_without_checkpoint_starts_afresh(llama_dir, corpus_dir, tmp_path, capsys):
    with one_thread():
        fresh = ln.record(str(llama_dir), corpus_dir, progress=False, checkpoint_dir=tmp_path / "none",
                          resume=True, **PARAMS)
        plain = ln.record(str(llama_dir), corpus_dir, progress=False, **PARAMS)
    assert "starting from the beginning" in capsys.readouterr().err
    assert_identical(fresh, plain)
