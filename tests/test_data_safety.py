"""Data safety, a rule of every command (issue 14): outputs checked before any work, never an input, an existing
artefact replaced only with --force, modes from the umask. Each case: one-line message, exit 2, nothing written
or lost."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import langneurons as ln
from langneurons.cli.main import main
from langneurons.errors import LangNeuronsError

SRC = Path(__file__).resolve().parents[1] / "src"


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 (files) or "dir", for everything under ``root`` (hidden entries too)."""
    if not root.exists():
        return {}
    found = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        found[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    return code, err


def one_error(err: str) -> str:
    """The error line (earlier lines could only be progress bars), checked to be the only error and no traceback."""
    lines = err.splitlines()
    assert lines and "Traceback" not in err and sum(": error: " in line for line in lines) == 1, err
    assert lines[-1].startswith("langneurons ") and ": error: " in lines[-1], err
    return lines[-1]


def hand_stats(languages=("aa", "bb", "cc"), layers=2, width=8, seed=0) -> ln.ActivationStats:
    generator = torch.Generator().manual_seed(seed)
    k = len(languages)
    positive = torch.randint(0, 100, (k, layers, width), generator=generator)
    sums = torch.rand(k, layers, width, dtype=torch.float64, generator=generator) * 100
    return ln.ActivationStats(list(languages), positive, sums, sums**2, torch.full((k,), 100, dtype=torch.long),
                              meta={"site": "ffn.act", "model": "hand"})


@pytest.fixture
def stats_dir(tmp_path) -> Path:
    path = tmp_path / "runs" / "x" / "stats"
    hand_stats().save(path)
    return path


# -- output is an input ------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["same", "inside", "holding"])
def test_output_is_never_an_input(where, stats_dir, capsys):
    out = {"same": stats_dir, "inside": stats_dir / "neurons", "holding": stats_dir.parent}[where]
    before = snapshot(stats_dir.parent)
    code, err = cli(capsys, "identify", "--stats", stats_dir, "--out", out, "--force")
    line = one_error(err)
    assert code == 2
    expected = {"same": "is also the input --stats", "inside": "lies inside the input --stats",
                "holding": "lies inside --out"}[where]
    assert expected in line and str(stats_dir) in line, line
    assert snapshot(stats_dir.parent) == before  # untouched, even with --force
    ln.load_stats(stats_dir)  # still loads (checksum)


def test_output_is_an_input_for_other_commands(stats_dir, tmp_path, capsys):
    neurons = tmp_path / "n.neurons"
    ln.identify(ln.load_stats(stats_dir), "lape", top_rate=0.2).save(neurons)
    before = snapshot(tmp_path)
    for args in (["analyze", "layers", "--neurons", neurons, "--out", neurons],
                 ["merge", stats_dir, stats_dir.parent / "other", "--out", stats_dir],
                 ["compare", neurons, neurons, "--out", neurons],
                 ["masks", "export", neurons, "--out", neurons],
                 ["perplexity", "--model", tmp_path / "no-model", "--corpus", tmp_path / "valid", "--neurons", neurons,
                  "--out", neurons]):
        code, err = cli(capsys, *args)
        assert code == 2 and "a command never writes over its own input" in one_error(err), (args, err)
    assert snapshot(tmp_path) == before


def test_python_save_never_replaces_another_kind(stats_dir):
    """In Python, save() replaces a previous result of its own kind, another kind only with force=True."""
    neurons = ln.identify(ln.load_stats(stats_dir), "lape", top_rate=0.2)
    before = snapshot(stats_dir)
    with pytest.raises(LangNeuronsError, match=r"holds a 'activation_stats' artefact; refusing to replace it"):
        neurons.save(stats_dir)
    assert snapshot(stats_dir) == before
    hand_stats(seed=1).save(stats_dir)  # same kind: replaced
    assert snapshot(stats_dir) != before and ln.load_stats(stats_dir).positive_count.sum() != 0
    foreign = stats_dir.parent / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for force in (False, True):
        with pytest.raises(LangNeuronsError, match="is not a langneurons output"):
            hand_stats().save(foreign) if not force else ln.PerplexityMatrix(
                ["normal"], ["aa"], torch.ones(1, 1, dtype=torch.float64), {"aa": 1}).save(foreign, force=True)
    assert (foreign / "notes.txt").read_text() == "keep me" and sorted(p.name for p in foreign.iterdir()) == [
        "notes.txt"]


# -- existing artefact: only with --force -------------------------------------------------------------
def test_existing_artefact_needs_force(stats_dir, capsys):
    out = stats_dir.parent / "lape.neurons"
    assert cli(capsys, "identify", "--stats", stats_dir, "--top-rate", 0.2, "--out", out)[0] == 0
    before = snapshot(out)
    code, err = cli(capsys, "identify", "--stats", stats_dir, "--top-rate", 0.5, "--out", out)
    line = one_error(err)
    assert code == 2 and f"--out {str(out)!r} already holds a neuron_set artefact" in line and "--force" in line
    assert snapshot(out) == before
    assert ln.load_neurons(out).parameters["top_rate"] == 0.2
    assert cli(capsys, "identify", "--stats", stats_dir, "--top-rate", 0.5, "--out", out, "--force")[0] == 0
    assert ln.load_neurons(out).parameters["top_rate"] == 0.5
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging / backup left


def test_force_replaces_another_kind_from_the_cli(stats_dir, capsys):
    other = stats_dir.parent / "other"
    hand_stats(seed=3).save(other)
    code, err = cli(capsys, "identify", "--stats", stats_dir, "--top-rate", 0.2, "--out", other)
    assert code == 2 and "already holds a activation_stats artefact" in one_error(err)
    assert cli(capsys, "identify", "--stats", stats_dir, "--top-rate", 0.2, "--out", other, "--force")[0] == 0
    assert ln.load_neurons(other).method == "lape"


def test_record_onto_existing_statistics_is_refused_before_loading(stats_dir, tmp_path, capsys):
    before = snapshot(stats_dir)
    code, err = cli(capsys, "record", "--model", tmp_path / "no-model", "--corpus", tmp_path / "no-corpus",
                    "--out", stats_dir)
    line = one_error(err)  # the output problem, not the missing model: found before any loading
    assert code == 2 and "already holds a activation_stats artefact" in line and "--force" in line
    assert snapshot(stats_dir) == before


def test_report_replaces_a_report_but_not_another_file(stats_dir, tmp_path, capsys):
    run = stats_dir.parent
    assert cli(capsys, "report", run)[0] == 0
    assert cli(capsys, "report", run)[0] == 0  # a previous report: regenerated
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    code, err = cli(capsys, "report", run, "--out", mine)
    assert code == 2 and "exists; refusing to replace it (add --force" in one_error(err)
    assert mine.read_text() == "<p>my notes</p>"
    assert cli(capsys, "report", run, "--out", mine, "--force")[0] == 0 and "langneurons report" in mine.read_text()
    missing = tmp_path / "missing-run"
    assert cli(capsys, "report", missing)[0] == 2 and not missing.exists()  # a run dir is never created


def test_masks_and_toy_outputs_need_force(stats_dir, tmp_path, capsys):
    neurons = tmp_path / "n.neurons"
    ln.identify(ln.load_stats(stats_dir), "lape", top_rate=0.2).save(neurons)
    masks = tmp_path / "m.neuron.pth"
    masks.write_bytes(b"previous")
    code, err = cli(capsys, "masks", "export", neurons, "--out", masks)
    assert code == 2 and "exists; refusing to replace it" in one_error(err) and masks.read_bytes() == b"previous"
    assert cli(capsys, "masks", "export", neurons, "--out", masks, "--force")[0] == 0
    assert masks.read_bytes() != b"previous"
    model = tmp_path / "toy"
    model.mkdir()
    (model / "toy_train_args.json").write_text("{}")
    code, err = cli(capsys, "toy", "train", "--corpus", tmp_path / "nope", "--out", model)
    assert code == 2 and "already holds a previous result" in one_error(err)
    (model / "toy_train_args.json").unlink()
    (model / "weights.bin").write_text("someone else's")
    code, err = cli(capsys, "toy", "train", "--corpus", tmp_path / "nope", "--out", model, "--force")
    assert code == 2 and "is not a langneurons output" in one_error(err)
    assert (model / "weights.bin").read_text() == "someone else's"


def test_demo_replaces_its_own_run_only(tmp_path, capsys):
    """A previous demo run is replaced (rerunning the README's command works); other contents need --force."""
    from langneurons.testbed.demo import DEMO_ENTRIES

    run = tmp_path / "demo"
    for name in DEMO_ENTRIES[:-1]:
        (run / name).mkdir(parents=True)
    (run / "report.html").write_text("old")
    code, err = cli(capsys, "demo", "--out", run, "--model", tmp_path / "no-model")
    assert code == 2 and "no model at" in one_error(err)  # past the output checks: the model is the problem
    (run / "notes.txt").write_text("mine")
    code, err = cli(capsys, "demo", "--out", run, "--model", tmp_path / "no-model")
    assert code == 2 and "already holds a previous result" in one_error(err) and "--force" in err
    code, err = cli(capsys, "demo", "--out", run, "--model", tmp_path / "no-model", "--force")
    assert code == 2 and "no model at" in one_error(err)
    assert (run / "notes.txt").read_text() == "mine"


# -- unwritable output: found before any work ---------------------------------------------------------
UNWRITABLE_CASES = {
    "record": ["record", "--model", "{missing}", "--corpus", "{missing}"],
    "perplexity": ["perplexity", "--model", "{missing}", "--corpus", "{missing}", "--neurons", "{missing}"],
    "generate": ["generate", "--model", "{missing}", "--unconditional", "1"],
    "steer": ["steer", "--model", "{missing}", "--neurons", "{missing}", "--stats", "{missing}",
              "--unconditional", "1"],
    "sweep": ["analyze", "sweep", "--model", "{missing}", "--stats", "{missing}", "--language", "aa",
              "--corpus", "{missing}"],
    "ses": ["analyze", "ses", "--model", "{missing}", "--corpus", "{missing}"],
    "dominance": ["analyze", "dominance", "--model", "{missing}", "--corpus", "{missing}"],
    "layers": ["analyze", "layers", "--neurons", "{missing}"],
    "identify": ["identify", "--stats", "{missing}"],
    "identify pv": ["identify", "--method", "pv", "--base", "{missing}", "--finetuned", "aa={missing}",
                    "--finetuned", "bb={missing}"],
    "pv identify": ["pv", "identify", "--base", "{missing}", "--finetuned", "aa={missing}", "--finetuned",
                    "bb={missing}"],
    "pv perplexity": ["pv", "perplexity", "--model", "{missing}", "--corpus", "{missing}", "--parameters",
                      "{missing}"],
    "merge": ["merge", "{missing}"],
    "compare": ["compare", "{missing}"],
    "masks import": ["masks", "import", "{missing}", "--langs", "aa", "--width", "4"],
    "demo": ["demo", "--model", "{missing}"],
    "toy train": ["toy", "train", "--corpus", "{missing}"],
}


@pytest.mark.parametrize("case", sorted(UNWRITABLE_CASES))
def test_unwritable_output_is_found_before_any_work(case, tmp_path, capsys):
    """Every input is missing: if the command did any work first, the error would name an input."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "out"  # its parent is a file: cannot be created
    args = [a.replace("{missing}", str(tmp_path / "missing")) for a in UNWRITABLE_CASES[case]]
    code, err = cli(capsys, *args, "--out", out)
    line = one_error(err)
    assert code == 2 and f"cannot write --out {str(out)!r}" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"] and blocker.read_text() == "x"


def test_unwritable_report_and_masks_export(stats_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    neurons = tmp_path / "n.neurons"
    ln.identify(ln.load_stats(stats_dir), "lape", top_rate=0.2).save(neurons)
    for args in (["report", stats_dir.parent, "--out", blocker / "r.html"],
                 ["masks", "export", neurons, "--out", blocker / "m.pth"]):
        code, err = cli(capsys, *args)
        assert code == 2 and "cannot write --out" in one_error(err)
    assert blocker.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_found_before_any_work(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, err = cli(capsys, "record", "--model", tmp_path / "missing", "--corpus", tmp_path / "missing",
                        "--out", locked / "stats")
        assert code == 2 and "cannot write --out" in one_error(err) and "ermission denied" in err
    finally:
        locked.chmod(0o700)


# -- modes follow the umask ---------------------------------------------------------------------------
UMASK_SCRIPT = r"""
import os, sys, torch
os.umask(int(sys.argv[2], 8))
import langneurons as ln
from langneurons.cli.main import main
root = sys.argv[1]
generator = torch.Generator().manual_seed(0)
positive = torch.randint(0, 100, (3, 2, 8), generator=generator)
sums = torch.rand(3, 2, 8, dtype=torch.float64, generator=generator) * 100
stats = ln.ActivationStats(["aa", "bb", "cc"], positive, sums, sums ** 2, torch.full((3,), 100),
                           meta={"site": "ffn.act", "model": "hand"})
stats.save(root + "/run/stats")                                         # safetensors artefact
assert main(["identify", "--stats", root + "/run/stats", "--top-rate", "0.2", "--out", root + "/run/lape.neurons"]) == 0
neurons = ln.load_neurons(root + "/run/lape.neurons")
ln.layer_distribution(neurons).save(root + "/run/layers")                # tables + figure
ln.PerplexityMatrix(["normal", "aa"], ["aa", "bb"], torch.ones(2, 2, dtype=torch.float64), {"aa": 1, "bb": 1}
                    ).save(root + "/run/ppl")
assert main(["report", root + "/run"]) == 0                              # a single file
"""


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_modes_follow_the_umask(mask, tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "-c", UMASK_SCRIPT, str(tmp_path), oct(mask)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    entries = [run, *run.rglob("*")]
    assert {p.name for p in run.iterdir()} == {"stats", "lape.neurons", "layers", "ppl", "report.html"}
    for path in entries:
        mode = stat.S_IMODE(path.stat().st_mode)
        expected = (0o777 if path.is_dir() else 0o666) & ~mask
        assert mode == expected, (str(path.relative_to(tmp_path)), oct(mode), oct(expected))
    assert len([p for p in entries if p.is_file()]) >= 9


def test_meta_json_is_strict_json(tmp_path):
    matrix = ln.PerplexityMatrix(["normal", "aa"], ["aa", "bb"], torch.tensor([[1.0, 2.0], [1.5, 2.0]],
                                 dtype=torch.float64), {"aa": 3, "bb": 3})
    matrix.save(tmp_path / "ppl")  # no random row: mean_random_increase is NaN
    text = (tmp_path / "ppl" / "meta.json").read_text()
    meta = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in meta.json"))
    assert meta["summary"]["mean_random_increase"] is None
