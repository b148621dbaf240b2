"""Shared fixtures: a synthetic three-language corpus, a byte-level tokenizer and tiny models."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Three "languages" with disjoint alphabets, so their token streams differ.
ALPHABETS = {"aa": "abcdefghij", "bb": "абвгдежзик", "cc": "αβγδεζηθικ"}


def synthetic_documents(alphabet: str, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    documents = []
    for _ in range(count):
        words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(2, 6))) for _ in range(rng.randint(5, 12))]
        documents.append(" ".join(words) + ".")
    return documents


def write_corpus(directory: Path, count: int, seed: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for index, (lang, alphabet) in enumerate(ALPHABETS.items()):
        (directory / f"{lang}.txt").write_text("\n".join(synthetic_documents(alphabet, count, seed + index)) + "\n")
    return directory


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), 60, seed=1)


@pytest.fixture(scope="session")
def valid_dir(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("valid"), 20, seed=100)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, corpus_dir) -> Path:
    from langneurons.testbed.tiny import train_byte_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    texts = [line for path in sorted(corpus_dir.iterdir()) for line in path.read_text().splitlines()]
    train_byte_tokenizer(texts, out, vocab_size=300)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny random Llama saved with its tokenizer, loadable by path."""
    from transformers import AutoTokenizer

    from langneurons.testbed.tiny import tiny_model

    out = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_model("llama", vocab_size=300)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(out))
    return out


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    return 0
