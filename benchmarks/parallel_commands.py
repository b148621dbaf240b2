"""Every model command in one process and as two torchrun ranks (gloo, CPU): wall time, equal results, and what
checkpoints and the ``normal`` cache cost or save.

Uses the bundled toy Llama (8.9M parameters, 6 layers, context 128) and demo corpus, and from ``--data``
(default ``../shared/data``) the aligned Bible verses (``analyze ses``, the ``cloze`` task) and the mvicuna
questions (``steer``). Each command runs once as ``python -m langneurons CMD ...`` and once as ``torchrun
--nproc-per-node 2 -m langneurons CMD ...``, both with ``OMP_NUM_THREADS=1`` (one thread per rank), into
separate run directories (no shared cache); the outputs are compared. Wall and CPU seconds (all processes)
include starting Python and loading the model (2-3 CPU seconds per process on the development machine).

    python benchmarks/parallel_commands.py [--data ../shared/data] [--only perplexity,steer]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "langneurons" / "assets"
MODEL, TRAIN, VALID = ASSETS / "toy-llama", ASSETS / "demo_corpus" / "train", ASSETS / "demo_corpus" / "valid"


def environment() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def run(argv: list[str], ranks: int) -> tuple[float, float]:
    """Wall seconds and CPU seconds (all processes) of one command."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)] \
        if ranks > 1 else [sys.executable]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([*launcher, "-m", "langneurons", *argv], env=environment(), capture_output=True,
                            text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{result.stderr[-3000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def same(a: Path, b: Path, files: list[str]) -> bool:
    return all((a / name).read_bytes() == (b / name).read_bytes() for name in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--only", default=None, help="comma-separated commands")
    parser.add_argument("--keep", default=None, help="keep the run directories here")
    args = parser.parse_args()
    data = Path(args.data)
    work = Path(args.keep or tempfile.mkdtemp(prefix="ln-parallel-"))
    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    model = ["--model", str(MODEL)]
    if not (inputs / "stats").exists():
        run(["record", *model, "--corpus", str(TRAIN), "--out", str(inputs / "stats"), "--no-progress"], 1)
        run(["identify", "--stats", str(inputs / "stats"), "--out", str(inputs / "lape.neurons")], 1)
    langs = "en,es,fr,zh"
    cap = ["--langs", langs, "--max-tokens", "512"]  # 4 windows of 128 tokens per language
    table = {
        "record": (["record", *model, "--corpus", str(TRAIN), "--max-tokens", "2048", "--no-progress"], "stats",
                   ["tensors.safetensors"], "10 languages x 2,048 tokens"),
        "perplexity": (["perplexity", *model, "--corpus", str(VALID), "--neurons", str(inputs / "lape.neurons"), *cap,
                        "--no-progress"], "ppl", ["nll.csv"], "12 conditions x 4 languages x 512 tokens"),
        "sweep": (["analyze", "sweep", *model, "--stats", str(inputs / "stats"), "--language", "fr", "--ratios",
                   "0.01,0.05,0.1", "--corpus", str(VALID), *cap, "--no-progress"], "sweep", ["nll.csv"],
                  "normal + 3 ratios x 4 languages x 512 tokens"),
        "steer": (["steer", *model, "--prompts", str(data / "mvicuna"), "--neurons", str(inputs / "lape.neurons"),
                   "--stats", str(inputs / "stats"), "--langs", langs, "--limit", "8", "--max-new-tokens", "32",
                   "--batch-size", "4", "--langid", "py3langid", "--no-progress"], "steer", ["generations.jsonl"],
                  "4 languages x 8 prompts x 2 conditions, 32 new tokens, batch 4"),
        "ses": (["analyze", "ses", *model, "--corpus", str(data / "bible"), "--langs", "en,es,fr,de,ru,zh",
                 "--max-samples", "200", "--max-length", "64", "--no-progress"], "ses", ["ses.csv"],
                "6 languages x 200 verses, batch 16 rows"),
        "task": (["task", *model, "--task", "cloze", "--data", str(data), "--langs", langs, "--limit", "50",
                  "--neurons", str(inputs / "lape.neurons"), "--deactivate", "en,zh", "--no-progress"], "task",
                 ["accuracy.csv", "items.jsonl"], "bible cloze, 4 conditions x 4 languages x 50 items"),
    }
    wanted = args.only.split(",") if args.only else list(table)
    print("| command | work | 1 process: wall, CPU | 2 ranks: wall, CPU | equal |")
    print("|---|---|---|---|---|")
    results = {}
    for name in wanted:
        argv, out, files, what = table[name]
        times = {}
        for ranks in (1, 2):
            target = work / f"ranks{ranks}" / out
            shutil.rmtree(target.parent / ".langneurons-cache", ignore_errors=True)
            times[ranks] = run([*argv, "--out", str(target), "--force"] if name != "task" else
                               [*argv, "--out", str(target)], ranks)
        equal = same(work / "ranks1" / out, work / "ranks2" / out, files)
        results[name] = {**times, "equal": equal}
        (wall1, cpu1), (wall2, cpu2) = times[1], times[2]
        print(f"| {name} | {what} | {wall1:.1f} s, {cpu1:.1f} s | {wall2:.1f} s, {cpu2:.1f} s | "
              f"{'yes' if equal else 'NO'} |", flush=True)
    if "perplexity" in wanted:  # the normal cache and the checkpoints, one process
        base = [*table["perplexity"][0], "--out", str(work / "extra" / "ppl")]
        shutil.rmtree(work / "extra", ignore_errors=True)
        cold = run(base, 1)[1]
        warm = run([*base, "--force"], 1)[1]
        shutil.rmtree(work / "extra" / ".langneurons-cache", ignore_errors=True)
        checkpointed = run([*base, "--force", "--checkpoint-every", "1"], 1)[1]
        print(f"\nperplexity, one process, CPU seconds: {cold:.1f}; again with the normal row from the cache "
              f"{warm:.1f}; with --checkpoint-every 1 (a checkpoint after every batch) {checkpointed:.1f}")
        results["perplexity_cache"] = {"cold": cold, "warm": warm, "checkpoint_every_1": checkpointed}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
