"""A run with every analysis (record, identify, perplexity, the analyze subcommands, compare, steer and generate
with a few prompts) makes a report that opens with one finding per artefact, repeats nothing, shows the telling
generations, and stays navigable from its table of contents (also in a real browser)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langneurons.cli.main import main
from test_report import Page, chromium, dumped_root, find_chromium, page_metrics, screenshots

KINDS = ["activation_stats", "perplexity_matrix", "neuron_set", "layer_distribution", "method_comparison", "overlap",
         "selection_sweep", "ses", "dominance", "generations", "language_accuracy"]


def run_cli(*args) -> None:
    code = main([str(a) for a in args])
    assert code == 0, args


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, llama_dir, corpus_dir, valid_dir) -> Path:
    root = tmp_path_factory.mktemp("full")
    run = root / "run"
    parallel = root / "parallel"
    parallel.mkdir()
    lines = {lang: (valid_dir / f"{lang}.txt").read_text().splitlines()[:12] for lang in ("aa", "bb", "cc")}
    for lang, text in lines.items():
        (parallel / f"{lang}.txt").write_text("\n".join(text) + "\n")
    prompts = root / "prompts"
    prompts.mkdir()
    for lang, text in lines.items():
        (prompts / f"{lang}.txt").write_text("\n".join(line[:12] for line in text[:3]) + "\n")
    model = ["--model", llama_dir]
    quiet = "--no-progress"
    run_cli("record", *model, "--corpus", corpus_dir, "--seq-len", 16, "--max-tokens", 256, "--out", run / "stats", quiet)
    run_cli("identify", "--stats", run / "stats", "--top-rate", 0.1, "--out", run / "lape.neurons")
    run_cli("identify", "--stats", run / "stats", "--method", "lap", "--top-rate", 0.1, "--activation-threshold", 0.5,
            "--out", run / "lap.neurons")
    run_cli("perplexity", *model, "--corpus", valid_dir, "--neurons", run / "lape.neurons", "--seq-len", 16,
            "--max-tokens", 32, "--out", run / "ppl", quiet)
    run_cli("analyze", "layers", "--neurons", run / "lape.neurons", "--out", run / "layers")
    run_cli("analyze", "overlap", "--neurons", run / "lape.neurons", "--out", run / "overlap")
    run_cli("analyze", "sweep", *model, "--stats", run / "stats", "--language", "aa", "--corpus", valid_dir, "--ratios",
            0, 0.1, "--seq-len", 16, "--max-tokens", 32, "--out", run / "sweep", quiet)
    run_cli("analyze", "ses", *model, "--corpus", parallel, "--neurons", run / "lape.neurons", "--out", run / "ses",
            quiet)
    run_cli("analyze", "dominance", *model, "--corpus", parallel, "--out", run / "dominance", quiet)
    run_cli("compare", run / "lape.neurons", run / "lap.neurons", "--out", run / "compare")
    generation = ["--max-new-tokens", 4, "--langid", "py3langid", quiet]
    run_cli("steer", *model, "--prompts", prompts, "--neurons", run / "lape.neurons", "--stats", run / "stats",
            "--strength", 1, 5, "--out", run / "steer", *generation)
    run_cli("generate", *model, "--prompts", prompts, "--neurons", run / "lape.neurons", "--stats", run / "stats",
            "--activate", "bb", "--also-normal", "--out", run / "gen", *generation)
    return run


def test_every_kind_has_its_section_and_a_finding(full_run, capsys):
    assert main(["report", str(full_run)]) == 0
    text = (full_run / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert page.errors == []
    sections = [a["id"] for a in page.of("section")]
    assert sections[0] == "s-overview" and all(f"s-{kind}" in sections for kind in KINDS), sections
    # one finding per artefact at the top, each linked to its card, and the same sentence on the card
    overview = text.split('id="s-overview"', 1)[1].split("</section>", 1)[0]
    findings = overview.split('<div class="findings">', 1)[1].split("</div>", 1)[0]
    cards = [a["id"] for a in page.of("article") if a.get("id", "").startswith("a0-")]
    assert findings.count("<li>") == len(cards) == len(KINDS) + 1  # one artefact per kind, two neuron sets
    assert all(f'href="#{card}"' in findings for card in cards)
    assert text.count('<p class="finding">') == len(cards)
    # the contents list every section; every link inside the page resolves
    ids = set(page.ids())
    toc = text.split('<nav class="toc"', 1)[1].split("</nav>", 1)[0]
    assert all(f'href="#{section}"' in toc for section in sections)
    assert all(a["href"][1:] in ids for a in page.of("a") if a.get("href", "").startswith("#"))
    # hidden states are not a neuron site
    assert "layer.out" not in overview


def test_nothing_is_shown_twice_and_raw_records_are_the_telling_few(full_run):
    main(["report", str(full_run)])
    text = (full_run / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    bodies = [json.dumps(t["head"] + t["rows"] + t["foot"]) for t in page.tables]
    assert len(bodies) == len(set(bodies))
    images = [a["src"] for a in page.of("img")]
    assert len(images) == len(set(images))
    # the training corpus once (the neuron sets and the sweep link to it), the evaluation corpus once
    assert text.count("corpus: ") - text.count("the same as in") <= 3
    # generations: behind a details element, the steered outputs whose language changed first, never all
    steer = text.split('id="s-language_accuracy"', 1)[1].split("</section>", 1)[0]
    records = steer.split('<details class="records">', 1)[1].split("</details>", 1)[0]
    generations = [json.loads(line) for line in (full_run / "steer" / "generations.jsonl").read_text().splitlines()]
    shown = records.count("<tr>") - 1
    assert 0 < shown <= 8 < len(generations)
    normal = {(r["language"], r["index"]): r["detected_language"] for r in generations if r["condition"] == "normal"}
    changed = [r for r in generations if r["condition"] != "normal" and r["detected_language"] in r["activate"]
               and normal[(r["language"], r["index"])] not in r["activate"]]
    if changed:
        assert f"of the {len(changed)} steered outputs whose detected language changed" in records
        assert all(f"[{r['detected_language']}]" in records for r in changed[:shown])
    # tables sit behind their captions; the accuracy table comes before the records
    assert steer.index('<details class="table">') < steer.index('<details class="records">')


@pytest.mark.slow
def test_full_report_in_headless_chromium(full_run, tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed")
    main(["report", str(full_run)])
    report = full_run / "report.html"
    html_root, body = dumped_root(chromium(binary, tmp_path / "profile", "--virtual-time-budget=5000",
                                           "--dump-dom", report.as_uri()).stdout)
    assert html_root.get("data-js-errors") == "0", html_root.get("data-js-messages")
    assert body.get("data-images-ok") == "true"
    for width in (1400, 800):
        metrics = page_metrics(binary, report, width, tmp_path / "profile")
        assert metrics["data-opens-with"] == "findings" and metrics["data-repeated-tables"] == "0"
        assert metrics["data-toc-broken"] == "0" and metrics["data-toc-reached"] == metrics["data-toc-links"], metrics
    assert page_metrics(binary, report, 1400, tmp_path / "profile")["data-toc-position"] == "sticky"
    screenshots(binary, report, "full_report", tmp_path / "profile")
