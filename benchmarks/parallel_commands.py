"""Every model command in one process and as two torchrun ranks (gloo, CPU): wall time, equal results, and what
checkpoints and the ``normal`` cache cost or save.

Uses the bundled toy Llama (8.9M parameters, 6 layers, context 128) and demo corpus, and from ``--data``
(default ``../shared/data``) the aligned Bible verses (``analyze ses``, the ``cloze`` task) and the mvicuna
questions (``steer``). Each command runs once as ``python -m langneurons CMD ...`` and once as ``torchrun
--nproc-per-node 2 -m langneurons CMD ...``, both with ``OMP_NUM_THREADS=1`` (one thread per rank), into
separate run directories (no shared cache); the outputs are compared. Wall times include starting Python and
loading the model (about 5 s per process on the development machine).

    python benchmarks/parallel_commands.py [--data ../shared/data] [--only perplexity,steer]
"""

from __future__ import annotations

import argparse
import json
import os
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


def run(argv: list[str], ranks: int) -> float:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)] \
        if ranks > 1 else [sys.executable]
    start = time.perf_counter()
    result = subprocess.run([*launcher, "-m", "langneurons", *argv], env=environment(), capture_output=True,
                            text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{result.stderr[-3000:]}")
    return seconds


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
    table = {
        "record": (["record", *model, "--corpus", str(TRAIN), "--no-progress"], "stats", ["tensors.safetensors"],
                   "10 languages x 160 documents, 123k tokens"),
        "perplexity": (["perplexity", *model, "--corpus", str(VALID), "--neurons", str(inputs / "lape.neurons"),
                        "--no-progress"], "ppl", ["nll.csv"], "12 conditions x 10 languages, 48k tokens each"),
        "sweep": (["analyze", "sweep", *model, "--stats", str(inputs / "stats"), "--language", "fr", "--ratios",
                   "0.01,0.05", "--corpus", str(VALID), "--no-progress"], "sweep", ["nll.csv"],
                  "normal + 2 ratios x 10 languages"),
        "steer": (["steer", *model, "--prompts", str(data / "mvicuna"), "--neurons", str(inputs / "lape.neurons"),
                   "--stats", str(inputs / "stats"), "--langs", langs, "--limit", "8", "--max-new-tokens", "32",
                   "--batch-size", "4", "--langid", "py3langid", "--no-progress"], "steer", ["generations.jsonl"],
                  "4 languages x 8 prompts x 2 conditions, 32 new tokens"),
        "ses": (["analyze", "ses", *model, "--corpus", str(data / "bible"), "--langs", "en,es,fr,de,ru,zh",
                 "--max-samples", "400", "--max-length", "64", "--no-progress"], "ses", ["ses.csv"],
                "6 languages x 400 verses"),
        "task": (["task", *model, "--task", "cloze", "--data", str(data), "--langs", langs, "--limit", "100",
                  "--neurons", str(inputs / "lape.neurons"), "--no-progress"], "task", ["accuracy.csv", "items.jsonl"],
                 "bible cloze, 4 languages x 100 items x 6 conditions"),
    }
    wanted = args.only.split(",") if args.only else list(table)
    print("| command | work | 1 process | 2 ranks | equal |")
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
        print(f"| {name} | {what} | {times[1]:.1f} s | {times[2]:.1f} s | {'yes' if equal else 'NO'} |", flush=True)
    if "perplexity" in wanted:  # the normal cache and the checkpoints, one process
        base = [*table["perplexity"][0], "--out", str(work / "extra" / "ppl")]
        shutil.rmtree(work / "extra", ignore_errors=True)
        cold = run(base, 1)
        warm = run([*base, "--force"], 1)
        shutil.rmtree(work / "extra" / ".langneurons-cache", ignore_errors=True)
        checkpointed = run([*base, "--force", "--checkpoint-every", "1"], 1)
        print(f"\nperplexity, one process: {cold:.1f} s; again with the normal row from the cache {warm:.1f} s; "
              f"with --checkpoint-every 1 (a checkpoint after every batch) {checkpointed:.1f} s")
        results["perplexity_cache"] = {"cold": cold, "warm": warm, "checkpoint_every_1": checkpointed}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
