"""Models placed by accelerate (``device_map``): recording, perplexity and generation equal the plain model.

On the CPU the only placement that installs accelerate's hooks is disk offload: a layer whose weights
live on disk (``meta`` in the module) and are loaded onto the execution device for each forward. The
site hooks must follow such a layer, the statistics must land on one device, and nothing may stay
attached to the model afterwards.
"""

from __future__ import annotations

import json

import pytest
import torch

import langneurons as ln
from langneurons.cli.main import main
from langneurons.evaluation.generation import GenerationSettings, generate_texts
from langneurons.recording.recorder import execution_device, offloads_weights

pytest.importorskip("accelerate")

PARAMS = dict(seq_len=16, max_tokens=48, batch_size=2, progress=False)
FIELDS = ("positive_count", "activation_sum", "activation_sq_sum", "token_count")


def assert_identical(a, b) -> None:
    assert a.languages == b.languages
    for name in FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert getattr(a, name).device.type == "cpu"


@pytest.fixture(scope="module")
def plain(llama_dir):
    return ln.load_model(str(llama_dir), device="cpu")


@pytest.fixture(scope="module")
def offloaded(llama_dir, tmp_path_factory):
    """Layer 1 offloaded to disk, the rest on the CPU: accelerate hooks move its weights in per forward."""
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                  "model.layers.1": "disk", "model.norm": "cpu", "lm_head": "cpu"}
    loaded = ln.load_model(str(llama_dir), device_map=device_map,
                           offload_folder=tmp_path_factory.mktemp("offload"))
    assert loaded.model.model.layers[1].mlp.down_proj.weight.device.type == "meta"  # really offloaded
    return loaded


def test_record_with_device_map_auto_equals_plain(llama_dir, corpus_dir, plain, tmp_path):
    expected = ln.record(plain, corpus_dir, **PARAMS)
    assert_identical(ln.record(str(llama_dir), corpus_dir, device_map="auto", **PARAMS), expected)
    out = tmp_path / "stats"
    assert main(["record", "--model", str(llama_dir), "--corpus", str(corpus_dir), "--out", str(out),
                 "--device-map", "auto", "--seq-len", "16", "--max-tokens", "48", "--batch-size", "2",
                 "--no-progress"]) == 0
    assert_identical(ln.load_stats(out), expected)


@pytest.mark.parametrize("site", ["ffn.act", "ffn.down_in", "layer.out"])
def test_hooks_follow_an_offloaded_layer(offloaded, plain, corpus_dir, site):
    assert offloads_weights(offloaded.model) and not offloads_weights(plain.model)
    assert execution_device(offloaded.model) == torch.device("cpu")
    ids = torch.arange(3, 19).view(2, 8)
    with torch.inference_mode():
        before = offloaded.model(input_ids=ids).logits
    stats = ln.record(offloaded, corpus_dir, site=site, **PARAMS)
    assert_identical(stats, ln.record(plain, corpus_dir, site=site, **PARAMS))
    assert stats.positive_count[:, 1].sum() > 0  # the offloaded layer was recorded
    with torch.inference_mode():  # the model computes as before: no hook left behind, weights back on disk
        assert torch.equal(offloaded.model(input_ids=ids).logits, before)
        assert torch.equal(plain.model(input_ids=ids).logits, before)
    assert offloaded.model.model.layers[1].mlp.down_proj.weight.device.type == "meta"


def test_perplexity_and_generation_with_an_offloaded_layer(offloaded, plain, corpus_dir, valid_dir):
    stats = ln.record(plain, corpus_dir, **PARAMS)
    neurons = ln.identify(stats, method="lape", top_rate=0.1)
    matrices = [ln.perplexity_matrix(loaded, valid_dir, neurons, seq_len=16, max_tokens=48, progress=False)
                for loaded in (offloaded, plain)]
    assert matrices[0].conditions == matrices[1].conditions
    torch.testing.assert_close(matrices[0].nll, matrices[1].nll, rtol=1e-6, atol=1e-9)
    assert not torch.equal(matrices[0].nll[0], matrices[0].nll[-1])  # deactivation changed something
    settings = GenerationSettings(max_new_tokens=6, batch_size=2, template="{question}")
    prompts = ["abc def", "αβγ δεζ", "абв где"]
    assert generate_texts(offloaded, prompts, settings) == generate_texts(plain, prompts, settings)
    with ln.deactivate(offloaded.model, neurons, "aa"), ln.deactivate(plain.model, neurons, "aa"):
        assert generate_texts(offloaded, prompts, settings) == generate_texts(plain, prompts, settings)


def test_generate_command_with_device_map_equals_plain(llama_dir, tmp_path, capsys):
    outputs = []
    for name, extra in (("plain", []), ("auto", ["--device-map", "auto", "--offload-folder", str(tmp_path / "off")])):
        out = tmp_path / name
        assert main(["generate", "--model", str(llama_dir), "--unconditional", "3", "--max-new-tokens", "5",
                     "--out", str(out), "--no-progress", *extra]) == 0, capsys.readouterr().err
        outputs.append([json.loads(line)["output"] for line in (out / "generations.jsonl").read_text().splitlines()])
    assert outputs[0] == outputs[1] and len(outputs[0]) == 3


def test_offload_folder_needs_a_device_map(llama_dir, tmp_path, capsys):
    with pytest.raises(ln.LangNeuronsError, match="device map"):
        ln.load_model(str(llama_dir), offload_folder=tmp_path / "off")
    out = tmp_path / "out"
    assert main(["steer", "--model", str(llama_dir), "--neurons", str(tmp_path), "--stats", str(tmp_path),
                 "--unconditional", "2", "--offload-folder", str(tmp_path / "off"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--offload-folder needs --device-map" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
