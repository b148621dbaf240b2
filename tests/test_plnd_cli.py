"""``langneurons plnd``: identify, overlap, deactivate, layers and the whole paper; one-line errors (exit 2)."""

from __future__ import annotations

import json

import pytest

import langneurons as ln
from langneurons.cli.main import main


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def test_identify_overlap_deactivate_layers(llama_dir, corpus_dir, valid_dir, tmp_path, capsys):
    neurons_dir, importance = tmp_path / "plnd.neurons", tmp_path / "importance"
    assert run_cli("plnd", "identify", "--model", llama_dir, "--corpus", corpus_dir, "--max-inputs", 4,
                   "--max-length", 12, "--top-k-ffn", 24, "--top-k-attn", 12, "--save-importance", importance,
                   "--out", neurons_dir, "--no-progress") == 0
    neurons = ln.load_neurons(neurons_dir)
    assert neurons.method == "plnd" and neurons.sites == ["ffn.down_in", "attn.q", "attn.k", "attn.v"]
    assert neurons.languages == ["aa", "bb", "cc"] and all(n > 0 for n in neurons.sizes().values())
    # the generic identify reads the saved importance: the same set
    assert run_cli("identify", "--stats", importance, "--method", "plnd", "--param", "top_k_ffn=24",
                   "--param", "top_k_attn=12", "--out", tmp_path / "again.neurons") == 0
    again = ln.load_neurons(tmp_path / "again.neurons")
    assert all(again.mask(lang, site).equal(neurons.mask(lang, site)) for lang in neurons.languages
               for site in neurons.sites)
    assert run_cli("plnd", "overlap", "--neurons", neurons_dir, "--out", tmp_path / "overlap") == 0
    meta = json.loads((tmp_path / "overlap" / "meta.json").read_text())
    assert {t["file"] for t in meta["tables"]} >= {"overlap_attention.csv", "overlap_ffn.csv", "overlap_attn.q.csv"}
    assert run_cli("plnd", "deactivate", "--model", llama_dir, "--neurons", neurons_dir, "--eval-corpus", valid_dir,
                   "--seq-len", 16, "--max-tokens", 64, "--understanding", "0:1", "--generation", 0,
                   "--task-solving", "1:2", "--settings", "under,s_attn,s_ffn", "--english", "aa",
                   "--out", tmp_path / "mwork", "--no-progress") == 0
    meta = json.loads((tmp_path / "mwork" / "meta.json").read_text())
    assert meta["kind"] == "mwork_deactivation" and meta["bands"]["task_solving"] == [1]
    assert "no_shared@all_but_s_attn:lang-spec" in meta["conditions"]
    header = (tmp_path / "mwork" / "perplexity_delta.csv").read_text().splitlines()[0]
    assert header == "setting,method,aa,bb,cc,delta_en,delta_non_en,delta_up"
    assert run_cli("plnd", "layers", "--model", llama_dir, "--prompts", valid_dir, "--prompt-limit", 2,
                   "--prompt-fraction", 0.5, "--max-new-tokens", 3, "--english", "aa", "--out", tmp_path / "lens",
                   "--no-progress") == 0
    assert (tmp_path / "lens" / "layer_language.png").exists()


def test_paper_writes_one_run_directory_with_a_report(llama_dir, corpus_dir, valid_dir, tmp_path):
    out = tmp_path / "run"
    assert run_cli("plnd", "paper", "--model", llama_dir, "--corpus", corpus_dir, "--max-inputs", 3, "--max-length",
                   10, "--top-k-ffn", 24, "--top-k-attn", 12, "--eval-corpus", valid_dir, "--seq-len", 16,
                   "--max-tokens", 32, "--understanding", "0:1", "--generation", 0, "--task-solving", "1:2",
                   "--settings", "s_ffn", "--no-checks", "--english", "aa", "--prompt-limit", 1, "--max-new-tokens", 2,
                   "--out", out, "--no-progress") == 0
    for part in ("importance", "plnd.neurons", "overlap", "layers_ffn", "layers_attn_q", "mwork", "layer_language"):
        assert (out / part / "meta.json").exists(), part
    html = (out / "report.html").read_text()
    assert "MWork: deactivation by structure and layer band" in html and "Layer language by logit lens" in html


@pytest.fixture
def neurons_dir(tmp_path, llama_dir):
    path = tmp_path / "n.neurons"
    ln.NeuronSet.from_masks({"aa": {"ffn.down_in": __import__("torch").ones(2, 64, dtype=bool)}}).save(path)
    return path


def test_bad_input_is_one_line(llama_dir, corpus_dir, valid_dir, tmp_path, neurons_dir, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "aa.txt").write_text("\n\n")
    identify = ["plnd", "identify", "--model", llama_dir, "--max-inputs", 2, "--max-length", 8, "--no-progress"]
    deactivate = ["plnd", "deactivate", "--model", llama_dir, "--neurons", neurons_dir, "--eval-corpus", valid_dir,
                  "--langs", "aa", "--seq-len", 16, "--no-progress", "--english", "aa", "--no-checks"]
    cases = {
        "empty corpus": ([*identify, "--corpus", empty, "--out", tmp_path / "a"], "no document"),
        "top-k": ([*identify, "--corpus", corpus_dir, "--top-k-ffn", 65, "--out", tmp_path / "b"],
                  "top-k 65, larger than the 64 neurons per layer of ffn"),
        "memory": ([*identify, "--corpus", corpus_dir, "--memory", "lots", "--out", tmp_path / "c"], "--memory"),
        "bands": ([*deactivate, "--understanding", "0:2", "--generation", 1, "--out", tmp_path / "d"],
                  "understanding band overlaps the generation band"),
        "setting": ([*deactivate, "--settings", "nope", "--generation", 0, "--out", tmp_path / "e"],
                    "unknown setting 'nope'"),
        "two layers": ([*deactivate, "--out", tmp_path / "g"], "no task-solving layer of 2"),
        "no corpus": (["plnd", "identify", "--model", llama_dir, "--out", tmp_path / "f"], "needs --corpus"),
    }
    for name, (argv, message) in cases.items():
        capsys.readouterr()
        assert run_cli(*argv) == 2, name
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Loading weights" not in line]
        assert len(err) == 1 and err[0].startswith("langneurons plnd: error:") and message in err[0], (name, err)
