"""Every model command data parallel: two real gloo processes (torchrun, CPU) give the single-process results.

One torchrun launch (module fixture) runs, in the same two processes, ``perplexity``, ``analyze sweep``, ``steer``,
``analyze ses`` and ``task``, the resume of a SIGKILLed single-process perplexity run and of a single-process
recording, and a recording killed on both ranks; each test compares one of them with a single-process run in
this process (one thread, as each rank).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import langneurons as ln
from langneurons.cli.main import main

PPL = ["--seq-len", "16", "--max-tokens", "96", "--batch-size", "2", "--no-progress"]
RECORD = dict(seq_len=16, max_tokens=160, batch_size=1)  # 3 languages x 10 windows = 30 batches
RECORD_CLI = ["--seq-len", "16", "--max-tokens", "160", "--batch-size", "1", "--no-progress"]
QUESTIONS = {"aa": ["abc def", "ghij abc", "hij"], "bb": ["абв где", "жзи"], "cc": ["αβγ δεζ"]}
PARALLEL = {"aa": ["abc def", "ghij", "a b c d e f g", "hi", "ab ab"],
            "bb": ["абв где", "жзик", "а б в г д", "ик", "аб аб"],
            "cc": ["αβγ δεζ", "ηθικ", "α β γ δ", "ικ", "αβ αβ"]}

# The ranks: one process group for every command; chunks of 3 documents, so that counting the tokens of a
# language is shared between the ranks in several rounds. A step with "die_after" ends both processes inside
# batch n + 1 of the recording (its checkpoint of n batches written), as a kill would.
HARNESS = """
import json, os, sys
import torch, torch.distributed as dist
torch.set_num_threads(1)
dist.init_process_group("gloo")
import langneurons.data.rank_windows as rank_windows
rank_windows.TOKENIZE_CHUNK = 3
from langneurons.cli.main import main
for step in json.load(open(sys.argv[1])):
    if step.get("die_after"):
        from langneurons.recording.accumulator import StatsAccumulator
        end_batch, calls = StatsAccumulator.end_batch, [0]
        def dying(self, limit=step["die_after"][dist.get_rank()]):
            calls[0] += 1
            if calls[0] > limit:
                os._exit(3)
            end_batch(self)
        StatsAccumulator.end_batch = dying
    code = main(step["argv"])
    if code != 0:
        sys.exit(code)
dist.destroy_process_group()
"""

# A single process of `langneurons perplexity`, slowed after every batch and stalled in the 20th, then killed.
CHILD = """
import sys, time
import langneurons.evaluation.perplexity as perplexity
batch_nll, calls = perplexity.batch_nll, [0]
def slow(*args, **kwargs):
    calls[0] += 1
    time.sleep(600 if calls[0] == 20 else 0.02)
    return batch_nll(*args, **kwargs)
perplexity.batch_nll = slow
from langneurons.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def one_thread(fn, *args, **kwargs):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def read_csv(path: Path) -> list[list[str]]:
    with open(path) as handle:
        return list(csv.reader(handle))


def parts(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.pt")) if directory.is_dir() else []


def steps(directory: Path, rank: int = 0) -> list[int]:
    root = directory / f"rank-{rank}"
    return sorted(int(p.name.split("-")[1]) for p in root.iterdir() if p.name.startswith("step-")) \
        if root.is_dir() else []


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, llama_dir, corpus_dir):
    root = tmp_path_factory.mktemp("inputs")
    neurons = ln.NeuronSet({lang: [torch.arange(s, s + 12), torch.arange(s, s + 12)]
                            for lang, s in (("aa", 0), ("bb", 20), ("cc", 40))}, 2, 64, method="hand")
    neurons.save(root / "neurons")
    one_thread(ln.record, str(llama_dir), corpus_dir, seq_len=16, max_tokens=128, progress=False).save(root / "stats")
    for name, texts in (("prompts", QUESTIONS), ("parallel", PARALLEL)):
        (root / name).mkdir()
        for lang, lines in texts.items():
            (root / name / f"{lang}.txt").write_text("\n".join(lines) + "\n")
    rows = [("1", "aa", "abc def", ["ghij", "ab"], 0), ("2", "aa", "ghij", ["abc", "d e f"], 1),
            ("3", "aa", "hij a", ["bc", "c"], 0), ("1", "bb", "абв где", ["жзи", "кааб"], 1),
            ("2", "bb", "жзи", ["аб", "где"], 0)]
    (root / "task.jsonl").write_text("\n".join(json.dumps(dict(zip(("id", "language", "prompt", "options", "label"),
                                                                  row))) for row in rows) + "\n")
    return root


def commands(out: Path, llama_dir, valid_dir, inputs) -> dict[str, list[str]]:
    model = ["--model", str(llama_dir)]
    return {
        "ppl": ["perplexity", *model, "--corpus", str(valid_dir), "--neurons", str(inputs / "neurons"),
                "--out", str(out / "ppl"), *PPL],
        "sweep": ["analyze", "sweep", *model, "--stats", str(inputs / "stats"), "--language", "aa", "--ratios",
                  "0,0.05", "--corpus", str(valid_dir), "--out", str(out / "sweep"), *PPL],
        "steer": ["steer", *model, "--prompts", str(inputs / "prompts"), "--neurons", str(inputs / "neurons"),
                  "--stats", str(inputs / "stats"), "--out", str(out / "steer"), "--max-new-tokens", "4",
                  "--batch-size", "1", "--strength", "2", "--no-progress"],
        "ses": ["analyze", "ses", *model, "--corpus", str(inputs / "parallel"), "--out", str(out / "ses"),
                "--batch-size", "3", "--no-progress"],
        "task": ["task", *model, "--task", str(inputs / "task.jsonl"), "--neurons", str(inputs / "neurons"),
                 "--out", str(out / "task"), "--batch-size", "2", "--no-progress"],
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, llama_dir, corpus_dir, valid_dir, inputs):
    """Single-process references, a killed perplexity run, record checkpoints; then one torchrun launch."""
    root = tmp_path_factory.mktemp("runs")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    single = commands(root / "one", llama_dir, valid_dir, inputs)
    for argv in single.values():
        assert one_thread(main, argv) == 0, argv

    # a perplexity run SIGKILLed after some units were checkpointed
    killed = [*commands(root / "killed", llama_dir, valid_dir, inputs)["ppl"], "--checkpoint-every", "1"]
    child = subprocess.Popen([sys.executable, "-c", CHILD, *killed], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    store, deadline = root / "killed" / "ppl.checkpoint", time.monotonic() + 180
    while len(parts(store)) < 12:
        assert child.poll() is None, child.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL and not (root / "killed" / "ppl").exists()

    # a single-process recording's checkpoints (24 of 30 batches), resumed by two ranks
    one_thread(ln.record, str(llama_dir), corpus_dir, progress=False, checkpoint_dir=root / "rec1.checkpoint",
               checkpoint_every=12, **RECORD)
    shutil.rmtree(root / "rec1.checkpoint" / "rank-0" / "step-000000000030")
    record = ["record", "--model", str(llama_dir), "--corpus", str(corpus_dir), *RECORD_CLI]
    plan = [{"argv": argv} for argv in commands(root / "two", llama_dir, valid_dir, inputs).values()]
    plan += [{"argv": [*killed, "--resume"]},
             {"argv": [*record, "--out", str(root / "rec1"), "--resume"]},
             {"argv": [*record, "--out", str(root / "rec2"), "--checkpoint-every", "1"], "die_after": [6, 4]}]
    (root / "plan.json").write_text(json.dumps(plan))
    (root / "harness.py").write_text(HARNESS)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(root / "harness.py"), str(root / "plan.json")], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode != 0 and (root / "rec1").is_dir(), result.stderr[-4000:]  # the last step died
    return root


def meta(path: Path) -> dict:
    return json.loads((path / "meta.json").read_text())


def test_perplexity_two_ranks_equal_one(runs):
    one, two = ln.load_perplexity(runs / "one" / "ppl"), ln.load_perplexity(runs / "two" / "ppl")
    assert two.conditions == one.conditions == ["normal", "random", "aa", "bb", "cc"]
    assert torch.equal(two.nll, one.nll)  # per-batch sums gathered in batch order: the same additions
    assert two.tokens == one.tokens and two.meta["corpus"] == one.meta["corpus"]
    info = meta(runs / "two" / "ppl")
    assert info["world_size"] == 2 and len(info["rank_tokens"]) == 2 and min(info["rank_tokens"]) > 0
    assert sum(info["rank_tokens"]) == 5 * 3 * 96  # every condition x language x window, once
    assert meta(runs / "one" / "ppl")["world_size"] == 1


def test_sweep_two_ranks_and_the_normal_row_from_the_cache(runs):
    one, two = (read_csv(runs / where / "sweep" / "nll.csv") for where in ("one", "two"))
    assert one == two and [row[0] for row in one[1:]] == ["normal", "0", "0.05"]
    for where in ("one", "two"):  # the perplexity matrix of the same run directory computed the normal row
        info = meta(runs / where / "sweep")
        assert info["cached_results"] == 3 and sum(info["rank_tokens"]) == 2 * 3 * 96
        assert (runs / where / ".langneurons-cache" / "normal").is_dir()
    matrix = ln.load_perplexity(runs / "one" / "ppl")
    assert [float(v) for v in one[1][3:]] == pytest.approx(matrix.nll[0].tolist(), rel=1e-12)


def test_steering_two_ranks_equal_one(runs):
    lines = {where: (runs / where / "steer" / "generations.jsonl").read_text() for where in ("one", "two")}
    assert lines["one"] == lines["two"] and len(lines["one"].splitlines()) == 2 * 6  # greedy: the same outputs
    assert read_csv(runs / "one" / "steer" / "language_accuracy.csv") == \
        read_csv(runs / "two" / "steer" / "language_accuracy.csv")
    info = meta(runs / "two" / "steer")
    assert info["world_size"] == 2 and sum(info["rank_items"]) == 12 and min(info["rank_items"]) > 0


def test_per_sample_recording_two_ranks_equal_one(runs):
    assert read_csv(runs / "one" / "ses" / "ses.csv") == read_csv(runs / "two" / "ses" / "ses.csv")
    info = meta(runs / "two" / "ses")
    assert info["world_size"] == 2 and sum(info["rank_items"]) == 3 * 5 and min(info["rank_items"]) > 0
    assert info["inputs"] == meta(runs / "one" / "ses")["inputs"]  # token and cut counts of the whole corpus


def test_task_two_ranks_equal_one(runs):
    for name in ("accuracy.csv", "items.jsonl"):
        assert (runs / "one" / "task" / name).read_text() == (runs / "two" / "task" / name).read_text()
    info = meta(runs / "two" / "task")
    assert info["world_size"] == 2 and min(info["rank_items"]) > 0


def test_killed_perplexity_resumes_on_two_ranks(runs):
    resumed, whole = ln.load_perplexity(runs / "killed" / "ppl"), ln.load_perplexity(runs / "one" / "ppl")
    assert torch.equal(resumed.nll, whole.nll)
    info = meta(runs / "killed" / "ppl")
    # 12 of 45 units were checkpointed: the 9 of the normal row (also cached by then) and 3 of the random row
    assert info["world_size"] == 2 and info["cached_results"] == 3 and info["resumed_units"] >= 3
    assert sum(info["rank_tokens"]) < 5 * 3 * 96  # the finished batches did not run again
    assert not (runs / "killed" / "ppl.checkpoint").exists()


def assert_same_statistics(a, b) -> None:
    assert a.languages == b.languages
    assert torch.equal(a.positive_count, b.positive_count) and torch.equal(a.token_count, b.token_count)
    torch.testing.assert_close(a.activation_sum, b.activation_sum, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.activation_sq_sum, b.activation_sq_sum, rtol=1e-12, atol=1e-12)


def test_record_resumed_by_more_ranks(runs, llama_dir, corpus_dir):
    resumed = ln.load_stats(runs / "rec1")
    assert resumed.meta["resumed_from_batch"] == 24 and resumed.meta["parameters"]["world_size"] == 2
    assert_same_statistics(resumed, one_thread(ln.record, str(llama_dir), corpus_dir, progress=False, **RECORD))
    assert not (runs / "rec1.checkpoint").exists()


def test_record_killed_on_two_ranks_resumed_by_one(runs, llama_dir, corpus_dir):
    directory = runs / "rec2.checkpoint"
    assert steps(directory, 0) and steps(directory, 0)[-1] <= 6
    stats = one_thread(ln.record, str(llama_dir), corpus_dir, progress=False, checkpoint_dir=directory, resume=True,
                       **RECORD)
    assert_same_statistics(stats, one_thread(ln.record, str(llama_dir), corpus_dir, progress=False, **RECORD))
    assert not (directory / "rank-1").exists()  # taken over by rank 0's checkpoint
    assert stats.meta["resumed_from_batch"] >= 1
