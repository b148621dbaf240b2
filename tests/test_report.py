"""The HTML report: discovery, every section, embedded figures, numbers against the artefacts, errors, a browser."""

from __future__ import annotations

import base64
import csv
import json
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

import langneurons as ln
from langneurons.sets.artefacts import sidecar, write_json
from langneurons.errors import LangNeuronsError, LangNeuronsWarning
from langneurons.report import build_report, discover_run, sections
from langneurons.report.html import diverging_style, sequential_style
from langneurons.report.renderers import percent

ARTIFACTS = Path(__file__).resolve().parent / "_artifacts"
PNG = b"\x89PNG\r\n\x1a\n"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
HOSTILE = "<script>alert('x')</script> & \"quotes\""


class Page(HTMLParser):
    """Everything the tests look at: tags with attributes, text per element id, unbalanced tags."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.doctype = ""
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tables: list[dict] = []  # {"classes", "head", "rows": [[(text, attrs)]], "foot"}
        self._table_part: str | None = None
        self._cell: list[str] | None = None
        self._cell_attrs: dict[str, str] = {}
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed {self.stack}")

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.elements.append((tag, attributes))
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "table":
            self.tables.append({"classes": attributes.get("class", "").split(), "head": [], "rows": [], "foot": []})
        elif tag in ("thead", "tbody", "tfoot"):
            self._table_part = tag
        elif tag == "tr" and self.tables:
            key = {"thead": "head", "tbody": "rows", "tfoot": "foot"}[self._table_part or "tbody"]
            self.tables[-1][key].append([])
        elif tag in ("td", "th"):
            self._cell, self._cell_attrs = [], attributes

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            key = {"thead": "head", "tbody": "rows", "tfoot": "foot"}[self._table_part or "tbody"]
            self.tables[-1][key][-1].append(("".join(self._cell).strip(), self._cell_attrs))
            self._cell = None
        elif tag in ("thead", "tbody", "tfoot"):
            self._table_part = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def ids(self) -> list[str]:
        return [a["id"] for _, a in self.elements if "id" in a]

    def of(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag]

    def table_with(self, heading: str) -> dict:
        """The first table whose header starts with ``heading``."""
        for found in self.tables:
            if found["head"] and found["head"][0][0][0] == heading:
                return found
        raise AssertionError(f"no table headed {heading!r}")


def write_generic_artefact(directory: Path, png_source: Path) -> None:
    """An artefact of a kind the report does not know: a CSV matrix, a figure, a nested CSV, hostile text."""
    (directory / "tables").mkdir(parents=True)
    with open(directory / "overlap.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["language", "aa", "bb"])
        writer.writerow(["aa", "1.0", "0.25"])
        writer.writerow(["bb", "0.5", "1.0"])
    (directory / "tables" / "notes.csv").write_text(f"name,value\nnote,{HOSTILE.replace(',', ';')}\n")
    from langneurons.analysis.figures import heatmap  # a figure of its own (the same bytes would be linked)

    heatmap(torch.tensor([[1.0, 0.25], [0.5, 1.0]]), ["aa", "bb"], ["aa", "bb"], directory / "overlap.png", "overlap",
            "share")
    write_json(directory / "meta.json", sidecar("overlap_test", 1, {  # the layout of langneurons.analysis
        "title": "Overlap test", "summary": {"most_shared_pair": "aa-bb"},
        "tables": [{"file": "overlap.csv", "title": "Overlap matrix", "rows": "language x", "columns": "language y"}],
        "figures": [{"file": "overlap.png", "title": "Overlap heatmap"}],
        "files": ["tables/notes.csv"],  # a sub-folder's file, found because meta.json names it
        "definition": HOSTILE, "parameters": {"neurons": "lape.neurons", "share": 0.25},
    }))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, llama_dir, corpus_dir, valid_dir) -> Path:
    """The tiny pipeline: stats, a LAPE neuron set, a perplexity matrix, plus an unknown-kind artefact."""
    run = tmp_path_factory.mktemp("report") / "run"
    stats = ln.record(str(llama_dir), corpus_dir, seq_len=16, max_tokens=256, progress=False)
    stats.save(run / "stats")
    neurons = ln.identify(stats, method="lape", top_rate=0.1)
    neurons.save(run / "lape.neurons")
    matrix = ln.perplexity_matrix(str(llama_dir), valid_dir, neurons, seq_len=16, max_tokens=64, progress=False)
    matrix.save(run / "ppl")
    write_generic_artefact(run / "analysis" / "overlap", run / "ppl" / "perplexity_change.png")
    return run


def test_report_has_every_section_with_figures_and_numbers(run_dir):
    path = build_report(run_dir)
    assert path == run_dir / "report.html"
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert page.doctype.lower() == "doctype html" and text.startswith("<!DOCTYPE html>")
    assert page.errors == []
    assert {"charset": "utf-8"} in page.of("meta")
    assert [a.get("lang") for a in page.of("html")] == ["en"]

    # sections in order, each listed in the table of contents, every anchor pointing at an element
    section_ids = [a["id"] for a in page.of("section")]
    assert section_ids == ["s-overview", "s-activation_stats", "s-perplexity_matrix", "s-neuron_set",
                           "s-overlap_test"]
    links = [a["href"] for a in page.of("a")]
    assert [h for h in links if h.startswith("#s-")] == [f"#{s}" for s in section_ids]
    ids = page.ids()
    assert len(ids) == len(set(ids))
    assert all(h[1:] in ids for h in links if h.startswith("#"))
    cards = [a["id"] for a in page.of("article") if "id" in a]
    assert len(cards) == 1 + 4  # the run's overview card, four artefacts

    # self-contained: every figure a PNG data URI, no fetch of anything
    images = page.of("img")
    assert len(images) == 3  # perplexity_change.png, the layer distribution drawn here, overlap.png
    for image in images:
        prefix = "data:image/png;base64,"
        assert image["src"].startswith(prefix) and image["alt"]
        assert base64.b64decode(image["src"][len(prefix):]).startswith(PNG)
    for tag, attributes in page.elements:
        for name in ("src", "href", "action", "srcset", "poster", "data", "formaction"):
            value = attributes.get(name)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, name, value[:60])
    assert "http://" not in text and "https://" not in text and "@import" not in text and "url(" not in text
    assert not page.of("link")
    assert all("src" not in a for a in page.of("script"))

    # escaping: hostile text from meta.json and a CSV is shown, never interpreted
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    notes = page.table_with("name")
    assert notes["rows"][0][1][0] == HOSTILE.replace(",", ";")


def test_perplexity_table_matches_the_matrix(run_dir):
    page = Page(build_report(run_dir, run_dir / "check.html").read_text(encoding="utf-8"))
    matrix = ln.load_perplexity(run_dir / "ppl")
    found = next(t for t in page.tables if "matrix" in t["classes"])
    assert [c[0] for c in found["head"][0]] == ["condition \\ evaluated", *matrix.languages]
    assert [row[0][0] for row in found["rows"]] == ["normal", "random", *(f"deactivate {c}" for c in
                                                                         matrix.conditions[2:])]
    relative = matrix.change(relative=True)
    limit = float(relative[1:].abs().max())
    diagonal = 0
    for r, row in enumerate(found["rows"]):
        for c, (cell_text, attributes) in enumerate(row[1:]):
            value = float(matrix.perplexity[r, c])
            assert math.isclose(float(attributes["data-sort"]), value, rel_tol=1e-12)
            if r == 0:
                assert "style" not in attributes
                continue
            change = float(relative[r, c])
            assert cell_text.endswith(percent(change, limit))
            assert attributes["style"] == diverging_style(change, limit)
            is_diagonal = matrix.conditions[r] == matrix.languages[c]
            assert ("diag" in attributes["class"].split()) == is_diagonal
            diagonal += is_diagonal
    assert diagonal == len(matrix.languages)
    # the cell with the largest increase is drawn in the scale's full red (hand-computed end point)
    r, c = divmod(int(relative[1:].abs().argmax()), len(matrix.languages))
    expected = "rgb(178,24,43)" if float(relative[1 + r, c]) > 0 else "rgb(33,102,172)"
    assert expected in found["rows"][1 + r][1 + c][1]["style"]
    assert [cell[0] for cell in found["foot"][0][1:]] == [str(matrix.tokens[lang]) for lang in matrix.languages]


def test_neuron_set_and_stats_cards_match_the_artefacts(run_dir):
    page = Page(build_report(run_dir, run_dir / "check.html").read_text(encoding="utf-8"))
    neurons = ln.load_neurons(run_dir / "lape.neurons")
    counts = neurons.layer_counts()
    layers = page.table_with("language")  # the first "language" table is the stats corpus table
    assert [c[0] for c in layers["head"][0]] == ["language", "file", "sha256", "documents", "windows", "tokens"]
    stats_meta = json.loads((run_dir / "stats" / "meta.json").read_text())
    for row, lang in zip(layers["rows"], stats_meta["languages"]):
        assert row[0][0] == lang
        assert row[2][1]["title"] == stats_meta["corpus"]["files"][lang]["sha256"]
        assert int(row[5][0].replace(",", "")) == stats_meta["token_count"][lang]

    by_layer = next(t for t in page.tables if [c[0] for c in t["head"][0]][-1:] == ["total"])
    maximum = int(counts.max())
    for k, row in enumerate(by_layer["rows"]):
        assert row[0][0] == neurons.languages[k]
        assert [int(c[0]) for c in row[1:-1]] == counts[k].tolist()
        assert int(row[-1][0]) == int(counts[k].sum())
        assert [c[1]["style"] for c in row[1:-1]] == [sequential_style(v, maximum) for v in counts[k].tolist()]
    assert [int(c[0]) for c in by_layer["foot"][0][1:]] == [*counts.sum(0).tolist(), int(counts.sum())]
    sizes = next(t for t in page.tables if [c[0] for c in t["head"][0]] == ["language", "neurons",
                                                                          "share of all neurons"])
    assert {row[0][0]: int(row[1][0]) for row in sizes["rows"]} == neurons.sizes()

    # the unknown kind: its CSV as a table (square matrix: diagonal marked) and its parameters
    overlap = next(t for t in page.tables if [c[0] for c in t["head"][0]] == ["language", "aa", "bb"])
    assert [[c[0] for c in row] for row in overlap["rows"]] == [["aa", "1", "0.25"], ["bb", "0.5", "1"]]
    assert ["diag" in row[i + 1][1].get("class", "") for i, row in enumerate(overlap["rows"])] == [True, True]
    text = (run_dir / "check.html").read_text(encoding="utf-8")
    card = text.split('id="s-overlap_test"', 1)[1]
    assert card.index("Overlap heatmap · overlap.png") < card.index(
        "Overlap matrix (rows: language x; columns: language y) · overlap.csv") < card.index("tables/notes.csv")
    assert '<p class="card-title">Overlap test</p>' in card and "most_shared_pair" in card
    assert "<div><dt>share</dt><dd>0.25</dd></div>" in card  # its parameters, in the provenance


def test_several_runs_side_by_side(run_dir, tmp_path):
    other = tmp_path / "other-model"
    shutil.copytree(run_dir / "ppl", other / "ppl")
    shutil.copytree(run_dir / "lape.neurons", other / "lape.neurons")
    out = build_report([run_dir, other], tmp_path / "out" / "both.html")
    page = Page(out.read_text(encoding="utf-8"))
    assert page.errors == []
    text = out.read_text(encoding="utf-8")
    for section_id in ("s-perplexity_matrix", "s-neuron_set", "s-activation_stats"):
        body = text.split(f'id="{section_id}"', 1)[1].split("</section>", 1)[0]
        assert body.count('class="run-column"') == 2
        assert 'style="--runs:2"' in body
        assert '<p class="run-label">run</p>' in body and '<p class="run-label">other-model</p>' in body
    stats_body = text.split('id="s-activation_stats"', 1)[1].split("</section>", 1)[0]
    assert stats_body.count('class="card empty"') == 1  # the second run has no statistics
    assert len(page.of("img")) == 3 + 2
    assert not list((tmp_path / "out").glob(".*partial"))


def test_registered_renderer_and_failing_renderer(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(sections, "_REGISTRY", dict(sections._REGISTRY))
    sections.register_section("overlap_test", lambda a: f"<p id='custom'>{len(a.meta['tables'])} tables</p>",
                              title="Custom overlap", order=5)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    # a corrupt neuron set: its renderer fails (checksum), the card falls back to the generic one
    tensors = run / "lape.neurons" / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-4] + b"XXXX")
    with pytest.warns(LangNeuronsWarning, match="lape.neurons: could not render this neuron_set"):
        text = build_report(run).read_text(encoding="utf-8")
    page = Page(text)
    assert "custom" in page.ids() and "1 tables" in text and "Custom overlap" in text
    assert [a["id"] for a in page.of("section")][1] == "s-overlap_test"  # order 5: right after the overview
    neuron_card = text.split('id="s-neuron_set"', 1)[1].split("</section>", 1)[0]
    assert "could not render this neuron_set" in neuron_card and "checksum" in neuron_card
    assert "meta.json" in neuron_card  # the generic provenance block is still there


def test_discovery_depth_hidden_and_broken(tmp_path, run_dir):
    root = tmp_path / "run"
    shutil.copytree(run_dir / "ppl", root / "a" / "b" / "ppl")   # depth 3: not found
    shutil.copytree(run_dir / "ppl", root / "a" / "ppl")          # depth 2: found
    shutil.copytree(run_dir / "ppl", root / ".ppl.old")           # staging / backup folders are skipped
    (root / "broken").mkdir()
    (root / "broken" / "meta.json").write_text("{not json")
    (root / "kindless").mkdir()
    (root / "kindless" / "meta.json").write_text('{"x": 1}')
    run = discover_run(root)
    assert [(a.relative, a.kind) for a in run.artefacts] == [("a/ppl", "perplexity_matrix")]
    assert len(run.problems) == 2 and any("broken/meta.json" in p for p in run.problems)
    with pytest.warns(LangNeuronsWarning) as noted:
        text = build_report(root).read_text(encoding="utf-8")
    assert sorted(str(w.message).split(": ", 1)[1].split(":")[0] for w in noted) == ["broken/meta.json cannot be read",
                                                                                  'kindless/meta.json has no "kind"; skipped']
    assert "broken/meta.json cannot be read" in text


def test_errors_are_one_line_and_write_nothing(tmp_path, capsys, run_dir):
    from langneurons.cli.main import main

    with pytest.raises(LangNeuronsError, match="does not exist"):
        build_report(tmp_path / "missing")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    assert main(["report", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no langneurons artefacts" in err
    assert list(empty.rglob("*.html")) == [] and not list(empty.glob(".*"))
    assert main(["report", str(run_dir), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "--out", str(out), "--title", "My <run>"]) == 0
    assert "<title>My &lt;run&gt; · " in out.read_text(encoding="utf-8")


# -- in a real browser ------------------------------------------------------------------------------
def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
               "--hide-scrollbars", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def dumped_root(dom: str) -> tuple[dict[str, str], dict[str, str]]:
    """Attributes of <html> and <body> in a --dump-dom output."""
    page = Page(dom)
    return page.of("html")[0], page.of("body")[0]


#: measured in the browser after load: page height, the report's opening, repeated tables, the contents' links
METRICS_PROBE = """<script>window.addEventListener('load', function () {
  var body = document.body, main = document.querySelector('main');
  body.setAttribute('data-height', String(document.documentElement.scrollHeight));
  var first = main.querySelector('section');
  var opening = first ? Array.prototype.filter.call(first.children, function (e) {
    return e.tagName !== 'H2' && !e.classList.contains('lead'); })[0] : null;
  body.setAttribute('data-opens-with', opening ? opening.className : '');
  body.setAttribute('data-findings', String(main.querySelectorAll('.findings li').length));
  var seen = {}, repeated = 0;
  Array.prototype.forEach.call(document.querySelectorAll('main table'), function (table) {
    var text = table.textContent.replace(/\\s+/g, ' ').trim();
    if (seen[text]) repeated += 1; seen[text] = true;
  });
  body.setAttribute('data-repeated-tables', String(repeated));
  body.setAttribute('data-tables', String(document.querySelectorAll('main table').length));
  var images = {}, repeatedImages = 0;
  Array.prototype.forEach.call(document.images, function (image) {
    if (images[image.src]) repeatedImages += 1; images[image.src] = true;
  });
  body.setAttribute('data-repeated-images', String(repeatedImages));
  var links = document.querySelectorAll('nav.toc a'), broken = 0, reached = 0;
  Array.prototype.forEach.call(links, function (a) {
    var target = document.getElementById(a.getAttribute('href').slice(1));
    if (!target) { broken += 1; return; }
    a.click();
    if (Math.abs(target.getBoundingClientRect().top) < 40 || window.innerHeight + window.scrollY >=
        document.documentElement.scrollHeight - 2) reached += 1;
  });
  body.setAttribute('data-toc-links', String(links.length));
  body.setAttribute('data-toc-broken', String(broken));
  body.setAttribute('data-toc-reached', String(reached));
  body.setAttribute('data-toc-position', getComputedStyle(document.querySelector('nav.toc')).position);
  window.scrollTo(0, 0);
});</script></body>"""


def page_metrics(binary: str, report: Path, width: int, profile: Path) -> dict[str, str]:
    """What :data:`METRICS_PROBE` measures in headless Chromium at ``width`` CSS pixels."""
    probe = report.with_name(f".{report.stem}-probe-{width}.html")
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", METRICS_PROBE, 1), encoding="utf-8")
    try:
        _, body = dumped_root(chromium(binary, profile, f"--window-size={width},1000", "--virtual-time-budget=5000",
                                       "--dump-dom", probe.as_uri()).stdout)
    finally:
        probe.unlink(missing_ok=True)
    return body


def screenshots(binary: str, report: Path, name: str, profile: Path, widths=(1400, 800)) -> list[Path]:
    """Full-page screenshots at each width (kept in tests/_artifacts to look at)."""
    ARTIFACTS.mkdir(exist_ok=True)
    shots = []
    for width in widths:
        height = int(page_metrics(binary, report, width, profile).get("data-height", "3000"))
        shot = ARTIFACTS / f"{name}-{width}.png"
        shot.unlink(missing_ok=True)
        chromium(binary, profile, f"--screenshot={shot}", f"--window-size={width},{min(height, 16000)}",
                 report.as_uri())
        assert shot.is_file() and shot.read_bytes().startswith(PNG)
        shots.append(shot)
    return shots


@pytest.mark.slow
def test_report_in_headless_chromium(run_dir, tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed")
    report = build_report(run_dir, tmp_path / "report.html")
    html_root, body = dumped_root(chromium(binary, tmp_path / "profile", "--virtual-time-budget=5000",
                                           "--dump-dom", report.as_uri()).stdout)
    assert html_root.get("data-js-errors") == "0", html_root.get("data-js-messages")
    assert body.get("data-images") == "3" and body.get("data-images-ok") == "true"

    # clicking a header sorts the rows (twice: descending), numbers by value
    matrix = ln.load_perplexity(run_dir / "ppl")
    probe = """<script>(function () {
      var table = document.querySelector('table.matrix'), th = table.tHead.rows[0].cells[1];
      th.click(); th.click();
      document.body.setAttribute('data-sorted', Array.prototype.map.call(table.tBodies[0].rows,
        function (row) { return row.cells[0].textContent; }).join('|'));
      document.body.setAttribute('data-aria', th.getAttribute('aria-sort'));
      var image = document.querySelector('figure img');
      image.click();
      document.body.setAttribute('data-zoomed', String(image.parentNode.classList.contains('zoomed')));
    })();</script></body>"""
    sorted_page = tmp_path / "sorted.html"
    sorted_page.write_text(report.read_text(encoding="utf-8").replace("</body>", probe), encoding="utf-8")
    _, body = dumped_root(chromium(binary, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom",
                                   sorted_page.as_uri()).stdout)
    labels = ["normal", "random", *(f"deactivate {c}" for c in matrix.conditions[2:])]
    column = matrix.perplexity[:, 0].tolist()
    expected = [label for _, label in sorted(zip(column, labels), key=lambda x: -x[0])]
    assert body.get("data-sorted", "").split("|") == expected and body.get("data-aria") == "descending"
    assert body.get("data-zoomed") == "true"  # a click on a figure enlarges it

    # the probes can fail: a broken image and a script error are both reported
    broken = tmp_path / "broken.html"
    broken.write_text(report.read_text(encoding="utf-8").replace(
        "</main>", '<img src="data:image/png;base64,AAAA" alt="x"><script>undefinedFunction();</script></main>'),
        encoding="utf-8")
    html_root, body = dumped_root(chromium(binary, tmp_path / "profile", "--virtual-time-budget=5000",
                                           "--dump-dom", broken.as_uri()).stdout)
    assert int(html_root.get("data-js-errors", "0")) >= 2 and body.get("data-images-ok") == "false"
    assert "undefinedFunction" in html_root.get("data-js-messages", "")

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    result = chromium(binary, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000",
                      report.as_uri())
    assert shot.is_file() and shot.read_bytes().startswith(PNG), result.stderr[-2000:]
    assert "Uncaught" not in result.stderr


def test_parameter_set_card_and_zeroing_matrix(tmp_path):
    from langneurons.sets.parameterset import from_flat_indices
    from langneurons.evaluation.perplexity import PerplexityMatrix

    shapes = {"model.layers.0.self_attn.q_proj.weight": (4, 4), "model.layers.0.mlp.up_proj.weight": (8, 4),
              "model.layers.1.mlp.up_proj.weight": (8, 4)}
    # en: 2 entries in layer 0's q_proj, 2 in layer 0's up_proj, 4 in layer 1's up_proj; zh: 2 in layer 1's up_proj
    flat = {"en": torch.tensor([0, 1, 16, 17, 48, 49, 50, 51]), "zh": torch.tensor([60, 61])}
    run = tmp_path / "run"
    pset = from_flat_indices(flat, shapes, method="pv", source={"base": {"path": "base/"},
                                                                "finetuned": {"en": {"path": "ft-en/"}}})
    assert pset.grouped_counts("en") == ({0: 4, 1: 4}, {"q_proj": 2, "up_proj": 6})
    pset.save(run / "pv.parameters")
    nll = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.5, 2.0], [1.0, 2.5]], dtype=torch.float64)
    PerplexityMatrix(["normal", "random", "en", "zh"], ["en", "zh"], nll, {"en": 10, "zh": 10},
                     {"intervention": "zero parameters", "parameter_set": {"method": "pv", "sizes": pset.sizes()}}
                     ).save(run / "pv.ppl")
    text = build_report(run, run / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert not page.errors
    matrix = next(t for t in page.tables if "matrix" in t["classes"])
    assert [row[0][0] for row in matrix["rows"]] == ["normal", "random", "zero en's parameters",
                                                     "zero zh's parameters"]
    assert "Zeroing a language&#x27;s own parameters raises its perplexity" in text  # the headline, escaped
    assert "model: base/" in text  # the header names the parameter set's base model

    def find(first_header):
        return next(t for t in page.tables if t["head"] and [c[0] for c in t["head"][0]][:2] == first_header)

    sizes = find(["language", "entries"])
    assert [[c[0] for c in row] for row in sizes["rows"]] == [["en", "8", "10.000%"], ["zh", "2", "2.500%"]]  # of 80
    layers = find(["language", "layer 0"])
    assert [[c[0] for c in row] for row in layers["rows"]] == [["en", "50%", "50%", "8"], ["zh", "0%", "100%", "2"]]
    kinds = find(["language", "q_proj"])
    assert [[c[0] for c in row] for row in kinds["rows"]] == [["en", "25%", "75%", "8"], ["zh", "0%", "100%", "2"]]
