"""The one output style (tables, arrays, figures, raw records, one meta.json), its open kind registry, the
writers moved onto it keeping their files, old folders still loading, report sections from the registry, and
no import-time side effects."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import langneurons as ln
from langneurons.errors import LangNeuronsError
from langneurons.evaluation.steering import GenerationRecord, LanguageAccuracy, load_language_accuracy
from langneurons.sets.artefacts import sidecar, write_json
from langneurons.sets.output import (
    Array,
    Figure,
    Output,
    Records,
    Table,
    read_array,
    read_output_meta,
    read_records,
    register_kind,
)

SRC = Path(__file__).resolve().parents[1] / "src"
PNG = b"\x89PNG\r\n\x1a\n"


def csv_text(header, rows, fmt) -> str:
    """What the 0.1 writers produced: csv.writer, header, then each row's label and formatted values."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    for label, values in rows:
        writer.writerow([label, *(fmt(v) for v in values)])
    return buffer.getvalue()


def raw(path: Path) -> str:
    """A file's text with its line ends as written (csv writes \\r\\n)."""
    return path.read_bytes().decode("utf-8")


def record(condition: str, lang: str, detected: str, index: int = 0) -> GenerationRecord:
    return GenerationRecord(lang, index, f"q{index} ünï", f"Q: q{index}\nA:", condition, [], [lang] if
                            condition != "normal" else [], 1.0 if condition != "normal" else None, "答え", detected)


# -- the output style ----------------------------------------------------------------------------------
def test_output_writes_every_part_and_describes_it(tmp_path):
    kind = register_kind("test_style", 3, "a test kind")
    assert kind in ln.analysis.KINDS and "test_style" in list(ln.analysis.KINDS)  # the registry is open
    values = torch.arange(12, dtype=torch.float64).view(3, 4) / 7

    def draw(path: Path) -> None:
        from langneurons.analysis.figures import line_plot

        line_plot([0, 1, 2], {"a": [1, 2, 3]}, path, "t", "x", "y")

    out = Output(kind, "A test", [Table("t.csv", "T", ["row", "a", "b"], [["r0", 1, 0.5], ["r1", 2, float("nan")]],
                                       rows_are="rows", columns_are="columns")],
                 [Figure("f.png", "F", draw)], {"best": "r0"}, {"model": "m", "tables": "provenance cannot override"},
                 arrays=[Array("sim.npy", "Similarity", values, "language", "language")],
                 records=[Records("raw.jsonl", "Raw", [{"text": "ä", "n": 1}, {"text": "b", "n": 2}])],
                 headline="Everything in one place.").save(tmp_path / "o")
    meta = read_output_meta(out, "test_style")
    assert meta["schema_version"] == 3 and meta["title"] == "A test" and meta["headline"] == "Everything in one place."
    assert meta["tables"] == [{"file": "t.csv", "title": "T", "rows": "rows", "columns": "columns"}]
    assert meta["figures"] == [{"file": "f.png", "title": "F"}] and meta["summary"] == {"best": "r0"}
    assert meta["raw"] == [{"file": "raw.jsonl", "title": "Raw", "count": 2}] and meta["model"] == "m"
    [array] = meta["arrays"]
    assert (array["file"], array["dtype"], array["shape"], array["rows"]) == ("sim.npy", "float32", [3, 4], "language")
    assert {"langneurons", "torch", "transformers", "python"} <= set(meta["environment"])
    assert raw(out / "t.csv") == "row,a,b\r\nr0,1,0.500000\r\nr1,2,nan\r\n"
    assert (out / "f.png").read_bytes().startswith(PNG)
    loaded = read_array(out, "sim.npy")
    assert loaded.dtype == np.float32 and np.array_equal(loaded, values.numpy().astype(np.float32))
    assert read_array(out, "sim.npy", mmap=True).shape == (3, 4)
    assert read_records(out / "raw.jsonl") == [{"text": "ä", "n": 1}, {"text": "b", "n": 2}]
    assert "ä" in (out / "raw.jsonl").read_text(encoding="utf-8")  # not ASCII-escaped

    np.save(out / "sim.npy", np.zeros((4, 3), dtype=np.float32))  # an edited array is reported
    with pytest.raises(LangNeuronsError, match="checksum"):
        read_array(out, "sim.npy")
    with pytest.raises(LangNeuronsError, match=r"float32\[4, 3\] but meta.json says float32\[3, 4\]"):
        read_array(out, "sim.npy", mmap=True)
    with pytest.raises(LangNeuronsError, match="holds a 'test_style' output, not perplexity_matrix"):
        read_output_meta(out, "perplexity_matrix")
    with pytest.raises(LangNeuronsError, match="holds a 'test_style' artefact, expected 'perplexity_matrix'|"
                                               "holds a 'test_style' output"):
        ln.load_perplexity(out)


def test_output_checks_kind_and_files(tmp_path):
    with pytest.raises(ValueError, match="register_kind"):
        Output("never_registered", "x").save(tmp_path / "a")
    register_kind("test_files")
    table = Table("x.csv", "x", ["a"], [], rows_are="", columns_are="")
    with pytest.raises(ValueError, match="distinct"):
        Output("test_files", "x", [table, table]).save(tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# -- the writers moved onto it keep their files ------------------------------------------------------
def test_perplexity_matrix_files_are_unchanged(tmp_path):
    nll = torch.tensor([[1.0, 2.0], [1.25, 2.5], [2.0, 2.125]], dtype=torch.float64)
    matrix = ln.PerplexityMatrix(["normal", "random", "aa"], ["aa", "bb"], nll, {"aa": 10, "bb": 12},
                                 {"model": "m", "site": "ffn.act"})
    out = matrix.save(tmp_path / "ppl")
    rows = [("normal", [1.0, 2.0]), ("random", [1.25, 2.5]), ("aa", [2.0, 2.125])]
    assert raw(out / "nll.csv") == csv_text(["condition", "aa", "bb"], rows, lambda v: f"{v:.6f}")
    expected = [(label, [float(torch.tensor(v, dtype=torch.float64).exp()) for v in values]) for label, values in rows]
    assert raw(out / "perplexity.csv") == csv_text(["condition", "aa", "bb"], expected, lambda v: f"{v:.6f}")
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "nll.csv", "perplexity.csv", "perplexity_change.png"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "perplexity_matrix" and meta["conditions"] == ["normal", "random", "aa"]
    assert meta["tokens"] == {"aa": 10, "bb": 12} and meta["model"] == "m"
    assert [t["file"] for t in meta["tables"]] == ["perplexity.csv", "nll.csv"]
    assert meta["summary"]["rows"] == 1 and meta["summary"]["row_max_on_diagonal"] == 1
    back = ln.load_perplexity(out)
    assert back.conditions == matrix.conditions and torch.allclose(back.nll, nll) and back.meta["model"] == "m"


def test_language_accuracy_and_generations_files_are_unchanged(tmp_path):
    records = [record("normal", "aa", "bb", 0), record("normal", "aa", "aa", 1), record("+aa", "aa", "aa", 0),
               record("+aa", "aa", "aa", 1)]
    accuracy = torch.tensor([[0.5, 1.0], [0.25, 0.123456]], dtype=torch.float64)
    quality = torch.tensor([[float("nan"), 7.5], [3.0, 4.0]], dtype=torch.float64)
    result = LanguageAccuracy(["aa", "bb"], accuracy, {"aa": {"outputs": 2}}, records, {"title": "acc"}, quality)
    out = result.save(tmp_path / "acc")
    four = lambda v: "" if v != v else f"{v:.4f}"  # noqa: E731 - the 0.1 writer's cells
    assert raw(out / "language_accuracy.csv") == csv_text(
        ["language", "normal", "steered"], [("aa", [0.5, 1.0]), ("bb", [0.25, 0.123456])], four)
    assert raw(out / "content_quality.csv") == csv_text(
        ["language", "normal", "steered"], [("aa", [float("nan"), 7.5]), ("bb", [3.0, 4.0])], four)
    lines = (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines == [json.dumps(r.to_json(), ensure_ascii=False) for r in records]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["summary"]["improved"] == 1 and meta["summary"]["mean_normal"] == pytest.approx(0.375)
    back = load_language_accuracy(out)
    assert back.records == records and torch.equal(back.accuracy, torch.tensor([[0.5, 1.0], [0.25, 0.1235]],
                                                                                dtype=torch.float64))
    from langneurons.evaluation.steering import read_generations, save_generations

    gen = save_generations(tmp_path / "gen", records, {"model": "m"})
    assert (gen / "generations.jsonl").read_text(encoding="utf-8") == (out / "generations.jsonl").read_text(
        encoding="utf-8")
    assert json.loads((gen / "meta.json").read_text())["records"] == 4 and read_generations(
        gen / "generations.jsonl") == records


def test_old_folders_still_load_and_render(tmp_path):
    """Folders as langneurons 0.1 wrote them (no tables / figures / summary in meta.json)."""
    run = tmp_path / "run"
    ppl = run / "ppl"
    ppl.mkdir(parents=True)
    rows = [("normal", [1.0, 2.0]), ("aa", [1.5, 2.0])]
    (ppl / "nll.csv").write_text(csv_text(["condition", "aa", "bb"], rows, lambda v: f"{v:.6f}"))
    (ppl / "perplexity.csv").write_text(csv_text(["condition", "aa", "bb"], rows, lambda v: f"{v:.6f}"))
    write_json(ppl / "meta.json", sidecar("perplexity_matrix", 1, {"conditions": ["normal", "aa"],
                                                                   "languages": ["aa", "bb"],
                                                                   "tokens": {"aa": 4, "bb": 4}}))
    acc = run / "steer"
    acc.mkdir()
    (acc / "language_accuracy.csv").write_text("language,normal,steered\r\naa,0.5000,1.0000\r\n")
    (acc / "generations.jsonl").write_text(json.dumps(record("normal", "aa", "aa").to_json()) + "\n")
    write_json(acc / "meta.json", sidecar("language_accuracy", 1, {"languages": ["aa"], "columns": ["normal", "steered"],
                                                                   "counts": {}}))
    matrix = ln.load_perplexity(ppl)
    assert matrix.conditions == ["normal", "aa"] and float(matrix.nll[1, 0]) == 1.5
    assert load_language_accuracy(acc).row("aa") == {"normal": 0.5, "steered": 1.0}
    text = ln.build_report(run).read_text(encoding="utf-8")
    assert "could not render" not in text
    assert "Deactivating a language&#x27;s own neurons raises its perplexity by +64.9%" in text  # exp(0.5) - 1


# -- report sections from the registry -----------------------------------------------------------------
def test_a_new_kind_needs_only_a_declaration(tmp_path):
    """What a paper module does: declare the kind and its section, write an Output; the report shows it."""
    from langneurons.analysis.output import declare_kind, summary_of
    from langneurons.report import sections

    kind = declare_kind("test_importance", "Importance test", 47, "Importance per head.",
                        lambda artefact: f"Head {summary_of(artefact)['top_head']} matters most.")
    assert sections.section_spec(kind).order == 47 and sections.section_spec(kind).renderer is sections.render_generic
    run = tmp_path / "run"
    Output(kind, "Importance", [Table("heads.csv", "Heads", ["head", "score"], [["h0", 0.25], ["h1", 0.75]],
                                      rows_are="head", columns_are="score")],
           summary={"top_head": "h1"}, meta={"model": "m"},
           arrays=[Array("scores.npy", "Scores", torch.rand(2, 5), "layer", "head")]).save(run / "imp")
    register_kind("test_unknown")  # a kind without a section: the generic card and its meta.json headline
    Output("test_unknown", "Unknown", summary={"n": 1}, headline="An unknown kind speaks for itself.").save(run / "u")
    text = ln.build_report(run).read_text(encoding="utf-8")
    findings = text.split('<div class="findings">', 1)[1].split("</div>", 1)[0]
    assert findings.index("Head h1 matters most.") < findings.index("An unknown kind speaks for itself.")
    assert 'id="s-test_importance"' in text and "Importance per head." in text
    assert "scores.npy" in text and "2 × 5" in text  # the arrays are listed with their shape


def test_report_findings_open_the_report(tmp_path):
    run = tmp_path / "run"
    hand = ln.NeuronSet({"aa": [[0, 1], []], "bb": [[], []]}, 2, 8, method="lape")
    hand.save(run / "lape.neurons")
    nll = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.5, 1.1], [1.0, 1.2]], dtype=torch.float64)
    ln.PerplexityMatrix(["normal", "random", "aa", "bb"], ["aa", "bb"], nll, {"aa": 4, "bb": 4}).save(run / "ppl")
    text = ln.build_report(run).read_text(encoding="utf-8")
    findings = text.split('<div class="findings">', 1)[1].split("</div>", 1)[0]
    assert text.index('<div class="findings">') < text.index('id="s-perplexity_matrix"')
    ppl_line, set_line = findings.split("</li>")[:2]
    assert "raises its perplexity by +43.5% on average" in ppl_line  # mean of e^0.5 - 1 and e^0.2 - 1 = 0.4350
    assert "the own language is hit hardest in 2 of 2 rows" in ppl_line
    assert "lape at ffn.act selected 0–2 neurons per language (mean 1.0, 6.25% of the 16); none for bb." in set_line


# -- no import-time side effects -----------------------------------------------------------------------
IMPORT_SCRIPT = r"""
import importlib, pkgutil, random, sys
import matplotlib, numpy, torch
backend = dict.__getitem__(matplotlib.rcParams, "backend")
torch_state, python_state, numpy_state = torch.random.get_rng_state(), random.getstate(), numpy.random.get_state()
import langneurons
names, skipped = [], []
for info in pkgutil.walk_packages(langneurons.__path__, "langneurons."):
    try:
        importlib.import_module(info.name)
        names.append(info.name)
    except ModuleNotFoundError as exc:  # an optional extra that is not installed
        if (exc.name or "").startswith("langneurons"):
            raise
        skipped.append(info.name)
assert dict.__getitem__(matplotlib.rcParams, "backend") == backend, dict.__getitem__(matplotlib.rcParams, "backend")
assert "matplotlib.pyplot" not in sys.modules
assert torch.equal(torch.random.get_rng_state(), torch_state), "torch RNG changed"
assert random.getstate() == python_state, "random changed"
assert all(numpy.array_equal(a, b) if hasattr(a, "shape") else a == b
           for a, b in zip(numpy.random.get_state(), numpy_state)), "numpy RNG changed"
print(len(names), "modules;", "skipped:", skipped)
"""


def test_importing_every_module_has_no_side_effects():
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    env.update(PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", IMPORT_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[0]) >= 60, result.stdout


def test_figures_leave_the_users_backend_alone(tmp_path):
    import matplotlib

    backend = dict.__getitem__(matplotlib.rcParams, "backend")
    from langneurons.analysis.figures import heatmap

    heatmap(torch.eye(2), ["a", "b"], ["a", "b"], tmp_path / "h.png", "t", "c")
    assert (tmp_path / "h.png").read_bytes().startswith(PNG)
    assert dict.__getitem__(matplotlib.rcParams, "backend") == backend
