"""Fast tests of ``langneurons toy train`` (tiny corpus, tiny model, a few dozen steps)."""

from __future__ import annotations

import json
import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from langneurons.errors import LangNeuronsError  # noqa: E402
from langneurons.testbed import train_toy_model  # noqa: E402

WORDS = {
    "en": "the lord said unto his people and they went into the city of god with joy".split(),
    "fr": "le seigneur dit à son peuple et ils allèrent dans la ville de dieu avec joie".split(),
    "zh": list("主对他的百姓说他们就欢欢喜喜地进了神的城"),
}
TINY = dict(hidden=32, layers=2, heads=2, intermediate=64, vocab_size=320, seq_len=32, batch_size=8, lr=3e-3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train faster on one thread, and do not fight other processes for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_corpus(root, n_lines: int = 120) -> None:
    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    for lang, words in WORDS.items():
        sep = "" if lang == "zh" else " "
        lines = []
        for _ in range(n_lines):
            start = rng.randrange(len(words) - 6)
            lines.append(sep.join(words[start : start + rng.randint(4, 8)]))
        (root / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    corpus = root / "corpus"
    write_corpus(corpus)
    out = train_toy_model(
        corpus, root / "model", steps=40, holdout=20, eval_every=20, save_steps="20", seed=0, progress=False, **TINY
    )
    return corpus, out


def test_saved_model_loads(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out = trained
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.bos_token == "<s>" and tok.eos_token == "</s>" and tok.pad_token == "<pad>"
    ids = tok("the lord said")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] != tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "the lord said"
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.config.model_type == "llama"
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tok))
    ckpt = out / "checkpoint-20"
    assert (ckpt / "config.json").is_file() and (ckpt / "tokenizer.json").is_file()
    AutoModelForCausalLM.from_pretrained(str(ckpt))


def test_heldout_loss_goes_down(trained):
    _, out = trained
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in log] == [0, 20, 40]
    first, last = log[0]["heldout_ppl"], log[-1]["heldout_ppl"]
    assert set(first) == {"en", "fr", "zh"}
    for lang in first:
        assert last[lang] < 0.5 * first[lang], (lang, first[lang], last[lang])
    table = json.loads((out / "heldout_ppl.json").read_text())["langs"]
    for lang, row in table.items():
        assert row["heldout_lines"] == 20 and row["unigram_ppl"] > 1
        assert row["model_ppl"] == pytest.approx(last[lang], rel=1e-3)


def test_init_from_one_language_and_determinism(trained, tmp_path):
    corpus, out = trained
    kwargs = dict(steps=4, holdout=20, seed=1, progress=False, batch_size=4, seq_len=32)
    a = train_toy_model(corpus, tmp_path / "a", ["fr"], init_from=out, **kwargs)
    b = train_toy_model(corpus, tmp_path / "b", ["fr"], init_from=out, **kwargs)
    ppl_a = json.loads((a / "heldout_ppl.json").read_text())["langs"]
    ppl_b = json.loads((b / "heldout_ppl.json").read_text())["langs"]
    assert list(ppl_a) == ["fr"] and ppl_a == ppl_b
    assert (a / "tokenizer.json").read_text() == (out / "tokenizer.json").read_text()


def test_bad_inputs(tmp_path):
    with pytest.raises(LangNeuronsError, match="corpus directory .* does not exist"):
        train_toy_model(tmp_path / "nope", tmp_path / "out", steps=1)
    write_corpus(tmp_path / "c", n_lines=30)
    with pytest.raises(LangNeuronsError, match=r"no corpus file for language\(s\) xx"):
        train_toy_model(tmp_path / "c", tmp_path / "out", ["en", "xx"], steps=1, holdout=5)
    (tmp_path / "c" / "de.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(LangNeuronsError, match="empty corpus file"):
        train_toy_model(tmp_path / "c", tmp_path / "out", ["en", "de"], steps=1, holdout=5)


def test_cli_error_is_one_line(tmp_path, capsys):
    from langneurons.cli.main import main

    assert main(["toy", "train", "--corpus", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
