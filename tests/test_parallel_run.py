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


# -- loading real models: every model command passes the loading options through ------------------------------
class Loaded(Exception):
    pass


def test_every_model_command_passes_the_loading_options(inputs, llama_dir, corpus_dir, valid_dir, tmp_path,
                                                        monkeypatch, capsys):
    from langneurons.errors import LangNeuronsError

    seen = []

    def fake_load_model(name, **kwargs):
        seen.append(kwargs)
        raise LangNeuronsError("stop after loading")

    monkeypatch.setattr("langneurons.model.loading.load_model", fake_load_model)
    monkeypatch.setattr("langneurons.recording.recorder.load_model", fake_load_model)
    options = ["--revision", "v1", "--trust-remote-code", "--attn-implementation", "eager", "--dtype", "float16"]
    model = ["--model", str(llama_dir)]
    argvs = [
        ["record", *model, "--corpus", str(corpus_dir), "--out", str(tmp_path / "r")],
        ["perplexity", *model, "--corpus", str(valid_dir), "--neurons", str(inputs / "neurons"), "--out",
         str(tmp_path / "p")],
        ["analyze", "sweep", *model, "--stats", str(inputs / "stats"), "--language", "aa", "--corpus",
         str(valid_dir), "--out", str(tmp_path / "s")],
        ["analyze", "ses", *model, "--corpus", str(inputs / "parallel"), "--out", str(tmp_path / "e")],
        ["analyze", "dominance", *model, "--corpus", str(inputs / "parallel"), "--out", str(tmp_path / "d")],
        ["generate", *model, "--prompts", str(inputs / "prompts"), "--out", str(tmp_path / "g")],
        ["steer", *model, "--prompts", str(inputs / "prompts"), "--neurons", str(inputs / "neurons"), "--stats",
         str(inputs / "stats"), "--out", str(tmp_path / "t")],
        ["task", *model, "--task", str(inputs / "task.jsonl"), "--out", str(tmp_path / "k")],
    ]
    for argv in argvs:
        assert main([*argv, *options]) == 2, argv
        assert "stop after loading" in capsys.readouterr().err
    assert len(seen) == len(argvs)
    for kwargs in seen:
        assert kwargs["revision"] == "v1" and kwargs["trust_remote_code"] is True
        assert kwargs["attn_implementation"] == "eager" and kwargs["dtype"] == "float16"


def test_pv_perplexity_passes_the_loading_options(llama_dir, valid_dir, tmp_path, monkeypatch, capsys):
    from langneurons.cli.main import build_parser

    args = build_parser().parse_args(["pv", "perplexity", "--model", str(llama_dir), "--corpus", str(valid_dir),
                                      "--parameters", "p", "--out", "o", "--revision", "v1", "--trust-remote-code",
                                      "--attn-implementation", "sdpa", "--dtype", "float16", "--resume"])
    assert (args.revision, args.trust_remote_code, args.attn_implementation, args.dtype, args.resume) == \
        ("v1", True, "sdpa", "float16", True)


def test_an_attention_implementation_that_cannot_load_is_one_line(inputs, llama_dir, valid_dir, tmp_path, capsys):
    code = main(["perplexity", "--model", str(llama_dir), "--corpus", str(valid_dir), "--neurons",
                 str(inputs / "neurons"), "--out", str(tmp_path / "p"), "--attn-implementation", "flash_attention_2",
                 *PPL])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(errors) == 1 and "cannot load model" in errors[0] and not (tmp_path / "p").exists()


def test_attention_needs_are_checked_on_one_line(tokenizer):
    from langneurons.cli._common import require_attention
    from langneurons.model.loading import as_loaded
    from langneurons.testbed.tiny import tiny_model

    sdpa = as_loaded(tiny_model("llama", vocab_size=300), tokenizer)
    require_attention(sdpa, "capture", "langneurons x")  # SDPA dispatches through the attention interface
    with pytest.raises(ln.LangNeuronsError, match="needs attention weights.*attn_implementation='sdpa'.*eager"):
        require_attention(sdpa, "weights", "langneurons x")
    require_attention(as_loaded(tiny_model("llama", vocab_size=300, attn_implementation="eager"), tokenizer),
                      "weights", "langneurons x")
    bloom = as_loaded(tiny_model("bloom", vocab_size=300), tokenizer)
    with pytest.raises(ln.LangNeuronsError, match="langneurons x cannot read the attention of this model: .*bloom"):
        require_attention(bloom, "capture", "langneurons x")


# -- the stores ------------------------------------------------------------------------------------------------
def test_progress_store_refuses_other_runs_and_resumes_its_own(tmp_path):
    from langneurons.recording.progress import ProgressStore

    store = ProgressStore(tmp_path / "ckpt", {"model": "m", "batch_size": 2})
    assert store.open(resume=False) == {}
    store.append({"ppl/normal/aa/#0": {0: (1.5, 30), 2: (2.5, 30)}})
    store.append({"ppl/normal/aa/#0": {1: (0.5, 30)}, "empty": {}})
    (tmp_path / "ckpt" / ".part-000009.pt.x.partial").write_bytes(b"torn")  # a write killed halfway
    with pytest.raises(ln.LangNeuronsError, match="holds checkpoints of an earlier run"):
        ProgressStore(tmp_path / "ckpt", {"model": "m", "batch_size": 2}).open(resume=False)
    with pytest.raises(ln.LangNeuronsError, match=r"different run \(batch_size: 2 there, 4 now\)"):
        ProgressStore(tmp_path / "ckpt", {"model": "m", "batch_size": 4}).open(resume=True)
    again = ProgressStore(tmp_path / "ckpt", {"model": "m", "batch_size": 2})
    assert again.open(resume=True) == {"ppl/normal/aa/#0": {0: (1.5, 30), 1: (0.5, 30), 2: (2.5, 30)}}
    assert again.append({"x": {0: 1}}).name == "part-000002.pt"  # numbering continues
    again.clear()
    assert not (tmp_path / "ckpt").exists()


def test_a_resumed_map_runs_only_the_missing_units(tmp_path):
    from langneurons.recording.parallel_run import ParallelRun

    calls = []

    def unit(i):
        calls.append(i)
        return i * i

    first = ParallelRun()
    first.checkpoint(tmp_path / "c", {"run": 1}, every=2)
    with first.scope("a"):
        assert first.map(5, unit) == [0, 1, 4, 9, 16]
    assert len(list((tmp_path / "c").glob("part-*.pt"))) == 3  # units 0-1, 2-3, 4
    (tmp_path / "c" / "part-000001.pt").unlink()  # as if killed before units 2-3 were kept
    second = ParallelRun()
    second.checkpoint(tmp_path / "c", {"run": 1}, every=2, resume=True)
    calls.clear()
    with second.scope("a"):
        assert second.map(5, unit) == [0, 1, 4, 9, 16]
    assert calls == [2, 3] and second.report()["resumed_units"] == 3 and second.report()["rank_items"] == [2]


def test_cache_keys_follow_the_model_weights(tmp_path, tokenizer):
    from langneurons.recording.parallel_run import ParallelRun, model_key
    from langneurons.recording.progress import ResultCache
    from langneurons.testbed.tiny import tiny_model

    model = tiny_model("llama", vocab_size=300)
    key = {"model": model_key(model), "what": "x"}
    run = ParallelRun(cache=ResultCache(tmp_path))
    assert run.cached(key, lambda: [1.0, 2]) == [1.0, 2]
    assert run.cached(key, lambda: pytest.fail("computed again")) == [1.0, 2] and run.cache_hits == 1
    with torch.no_grad():
        next(model.parameters()).mul_(1.01)  # other weights: another key
    assert model_key(model) != key["model"]
    assert run.cached({"model": model_key(model), "what": "x"}, lambda: "fresh") == "fresh"
    ResultCache(tmp_path).path(key).write_bytes(b"not a cache entry")  # unreadable: recomputed
    assert run.cached(key, lambda: "again") == "again"


def test_steer_then_generate_reuse_the_normal_outputs(inputs, llama_dir, tmp_path):
    common = ["--model", str(llama_dir), "--prompts", str(inputs / "prompts"), "--max-new-tokens", "4",
              "--batch-size", "1", "--no-progress"]
    assert one_thread(main, ["steer", *common, "--neurons", str(inputs / "neurons"), "--stats", str(inputs / "stats"),
                             "--out", str(tmp_path / "steer")]) == 0
    assert one_thread(main, ["generate", *common, "--neurons", str(inputs / "neurons"), "--deactivate", "aa",
                             "--also-normal", "--out", str(tmp_path / "gen")]) == 0
    assert meta(tmp_path / "gen")["cached_results"] == 3  # the normal outputs of aa, bb, cc
    records = [json.loads(line) for name in ("steer", "gen")
               for line in (tmp_path / name / "generations.jsonl").read_text().splitlines()]
    normal = {}
    for record in records:
        if record["condition"] == "normal":
            assert normal.setdefault((record["language"], record["index"]), record["output"]) == record["output"]
    assert len(normal) == 6


# -- the GPU benchmark: ready, and its code paths run on the CPU -------------------------------------------------
@pytest.mark.slow  # three processes import torch: ~20 s on the shared development machine
def test_gpu_benchmark_smoke_mode_runs_every_path_on_the_cpu(tmp_path, monkeypatch, capsys):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_7b.py"
    monkeypatch.syspath_prepend(str(script.parent))
    import gpu_7b

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["gpu_7b.py"])
    with pytest.raises(SystemExit) as stopped:
        gpu_7b.main()
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and "no CUDA device" in error and "--cpu-smoke" in error
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(script.parents[1] / "src"), env.get("PYTHONPATH", "")])
    out = tmp_path / "smoke.json"
    smoke = subprocess.run([sys.executable, str(script), "--cpu-smoke", "--dp-ranks", "2", "--json", str(out)],
                           env=env, capture_output=True, text=True, timeout=300)
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"forward", "body", "record"} and result["device"] == "cpu"
    assert result["record_over_forward"] > 0 and result["speed_up"] > 0 and result["batch_size"] == 2
    parallel = result["data_parallel"]  # the counts of the two gloo ranks equal one process (else exit 1)
    assert parallel["ranks"] == 2 and parallel["backend"] == "gloo" and sum(parallel["rank_tokens"]) == 4 * 64
