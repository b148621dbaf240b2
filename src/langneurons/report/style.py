"""The report page's inline style sheet and scripts (no external resources: nothing is fetched)."""

CSS = """
:root{--bg:#f4f6f9;--card:#fff;--ink:#1f2933;--muted:#5f6b7a;--line:#dfe3e8;--accent:#1d4e89;--head:#14213d;
--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--ink);line-height:1.45;font-size:15px;
font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans","Liberation Sans",
"Noto Sans CJK SC","Noto Sans CJK JP","Noto Sans SC","Source Han Sans SC","PingFang SC","Hiragino Sans",
"Microsoft YaHei","Yu Gothic","WenQuanYi Micro Hei","Noto Sans Devanagari","Nirmala UI","Mangal",
"Lohit Devanagari","Noto Sans Arabic","Segoe UI Symbol",sans-serif}
header.top{background:var(--head);color:#fff;padding:16px 32px 12px}
header.top h1{margin:0 0 4px;font-size:24px;font-weight:650;letter-spacing:.2px}
header.top .models{font-size:16px;color:#dbe4f0;margin:0 0 8px;word-break:break-all}
header.top .stamp{font-size:13px;color:#aab8cc;margin:0}
header.top .stamp span+span::before{content:"\\00b7";margin:0 8px;color:#6b7c93}
.layout{display:grid;grid-template-columns:210px minmax(0,1fr);gap:24px;padding:20px 32px 40px;
max-width:1500px;margin:0 auto}
.layout.wide{max-width:none}
nav.toc{position:sticky;top:16px;align-self:start;font-size:14px}
nav.toc h2{font-size:12px;text-transform:uppercase;letter-spacing:.08em;color:var(--muted);margin:4px 0 8px}
nav.toc ol{list-style:none;margin:0;padding:0}
nav.toc li{margin:0 0 2px}
nav.toc a{display:flex;justify-content:space-between;gap:8px;padding:5px 10px;border-radius:6px;color:var(--ink);
text-decoration:none}
nav.toc a:hover,nav.toc a:focus{background:#e4eaf2}
nav.toc .count{color:var(--muted);font-variant-numeric:tabular-nums}
main{min-width:0}
section.report-section{margin:0 0 28px;scroll-margin-top:12px}
section.report-section>h2{font-size:20px;margin:0 0 4px;color:var(--head)}
section.report-section>p.lead{margin:0 0 12px;color:var(--muted);font-size:14px}
.runs{display:grid;gap:16px;grid-template-columns:repeat(var(--runs,1),minmax(0,1fr))}
.run-column{min-width:0;display:flex;flex-direction:column;gap:16px}
.run-label{font-size:13px;font-weight:600;color:var(--accent);margin:0 0 -8px;word-break:break-all}
article.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 20px;
box-shadow:0 1px 2px rgba(20,33,61,.05);min-width:0;scroll-margin-top:12px}
article.card.empty{background:transparent;border-style:dashed;box-shadow:none;color:var(--muted);font-size:14px}
article.card>h3{margin:0 0 2px;font-size:16px;display:flex;flex-wrap:wrap;gap:8px;align-items:baseline}
article.card>h3 code{font-size:15px}
.badge{display:inline-block;font-size:11px;font-weight:600;letter-spacing:.04em;text-transform:uppercase;
background:#e6eef8;color:var(--accent);border-radius:99px;padding:2px 8px}
.sub{color:var(--muted);font-size:13px;margin:0 0 12px}
p.card-title{font-size:15px;font-weight:600;margin:0 0 8px}
.headline dl.facts{margin:0}
h4{font-size:14px;margin:16px 0 6px;color:var(--head)}
dl.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:3px 24px;margin:8px 0 4px;
font-size:13.5px}
dl.facts>div{display:grid;grid-template-columns:150px minmax(0,1fr);gap:12px}
dl.facts dt{color:var(--muted);overflow-wrap:anywhere}
dl.facts dd{margin:0;word-break:break-word}
.headline{background:#f0f5fb;border-left:4px solid var(--accent);padding:8px 12px;border-radius:4px;font-size:14px;
margin:8px 0 12px}
.table-wrap{overflow-x:auto;margin:6px 0 10px;max-width:100%}
table.data{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums;min-width:40%}
p.table-caption{font-size:13px;color:var(--muted);margin:12px 0 2px;word-break:break-word}
table.data th,table.data td{border:1px solid var(--line);padding:4px 9px;text-align:left;white-space:nowrap}
table.data td.num{text-align:right}
table.data td.text{white-space:pre-wrap;min-width:16em;max-width:40em}
table.data thead th{background:#eef2f7;font-weight:600;position:relative}
table.data tbody th,table.data tfoot th{background:#f7f9fb;font-weight:600}
table.data tfoot td,table.data tfoot th{color:var(--muted);font-style:italic}
table.sortable thead th{cursor:pointer;user-select:none;padding-right:20px}
table.sortable thead th::after{content:"\\2195";position:absolute;right:6px;color:#a0aab8;font-size:11px}
table.sortable thead th[aria-sort=ascending]::after{content:"\\25B2";color:var(--accent)}
table.sortable thead th[aria-sort=descending]::after{content:"\\25BC";color:var(--accent)}
td.diag{box-shadow:inset 0 0 0 2px #111;font-weight:700}
td small{display:block;font-size:11px;opacity:.9;font-weight:400}
code,pre{font-family:var(--mono);font-size:12.5px}
code{background:#f1f3f6;border-radius:4px;padding:1px 4px}
pre{background:#f7f8fa;border:1px solid var(--line);border-radius:6px;padding:10px;overflow:auto;max-height:420px;
margin:6px 0}
details{margin:10px 0 0}
details>summary{cursor:pointer;color:var(--accent);font-size:13.5px;font-weight:600}
details.table,details.tables,details.provenance,details.records,details.figures-more,details.sites{margin:4px 0 0;padding:5px 0 0;border-top:1px solid #eef0f3}
details.table>summary,details.tables>summary,details.provenance>summary,details.records>summary,details.figures-more>summary,details.sites>summary{font-weight:500;overflow-wrap:anywhere}
details.provenance>summary{color:var(--muted)}
details[open]>summary{margin-bottom:4px}
p.finding{margin:4px 0 10px;padding:6px 12px;background:#f0f5fb;border-left:4px solid var(--accent);
border-radius:4px;font-size:14px}
.summary{margin:4px 0 8px}
.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,400px),1fr));gap:10px 16px;
align-items:start;margin:6px 0}
.figures.single{grid-template-columns:minmax(0,560px)}
.figures figure{margin:0}
table.records td.text{min-width:14em;max-width:32em}
figure{margin:10px 0 6px;text-align:center}
figure img{max-width:100%;max-height:400px;width:auto;height:auto;border:1px solid var(--line);border-radius:6px;
background:#fff}
figure img{cursor:zoom-in}
figure.zoomed{position:fixed;inset:0;z-index:10;margin:0;background:rgba(255,255,255,.97);display:flex;
flex-direction:column;align-items:center;justify-content:center}
figure.zoomed img{max-width:96vw;max-height:90vh;cursor:zoom-out}
figcaption{font-size:12.5px;color:var(--muted);margin-top:4px}
p.note{font-size:12.5px;color:var(--muted);margin:2px 0 8px}
p.warning{background:#fff6e5;border:1px solid #f0c36d;border-radius:6px;padding:6px 10px;font-size:13.5px}
ul.artefacts{list-style:none;padding:0;margin:6px 0;font-size:13.5px;display:flex;flex-wrap:wrap;gap:4px 14px}
ul.artefacts li{padding:2px 0}
ul.artefacts a{color:var(--accent)}
.findings{background:#f0f5fb;border-left:4px solid var(--accent);padding:6px 14px;border-radius:4px;margin:8px 0 14px}
.findings h3{margin:4px 0;font-size:15px}.findings ul{margin:4px 0;padding-left:18px;font-size:14px}
.findings li{margin:3px 0}.findings a{color:var(--accent);font-weight:600}.findings .badge{margin:0 6px}
.legend{display:inline-flex;align-items:center;gap:6px;font-size:12px;color:var(--muted)}
.legend i{display:inline-block;width:90px;height:10px;border-radius:2px;border:1px solid var(--line)}
footer.bottom{color:var(--muted);font-size:12.5px;padding:0 32px 28px;text-align:center}
@media (max-width:900px){.layout{grid-template-columns:1fr;padding:12px 14px;gap:12px}
nav.toc{position:static}nav.toc ol{display:flex;flex-wrap:wrap;gap:2px 4px}nav.toc a{padding:3px 8px}
header.top{padding:12px 14px}.runs{grid-template-columns:1fr}dl.facts{grid-template-columns:1fr}
dl.facts>div{grid-template-columns:120px minmax(0,1fr)}article.card{padding:12px 14px}}
@media print{body{background:#fff;font-size:11pt}
header.top{background:#fff;color:#000;border-bottom:2px solid #000;padding:0 0 8px}
header.top .models,header.top .stamp{color:#333}.layout{display:block;padding:0;max-width:none}nav.toc{display:none}
article.card{box-shadow:none;break-inside:avoid;page-break-inside:avoid}figure img{max-height:24cm}
section.report-section{break-before:auto}
pre{max-height:none;white-space:pre-wrap}
table.data td,table.data th{-webkit-print-color-adjust:exact;print-color-adjust:exact}
table.sortable thead th::after{content:""}}
"""

# Installed first, in <head>: counts script errors, failed resources and console.error calls on <html>
# (``data-js-errors``, ``data-js-messages``), so a headless browser's ``--dump-dom`` can read them back.
ERROR_PROBE_JS = """
(function () {
  var root = document.documentElement, count = 0;
  function note(message) {
    count += 1;
    root.setAttribute('data-js-errors', String(count));
    var previous = root.getAttribute('data-js-messages') || '';
    root.setAttribute('data-js-messages', (previous ? previous + ' | ' : '') + String(message).slice(0, 300));
  }
  window.addEventListener('error', function (event) {
    var target = event.target;
    note(target && target !== window && target.tagName ? 'failed to load ' + target.tagName
                                                       : (event.message || 'error'));
  }, true);
  window.addEventListener('unhandledrejection', function (event) { note('unhandled rejection: ' + event.reason); });
  if (window.console && console.error) {
    var original = console.error;
    console.error = function () {
      note(Array.prototype.join.call(arguments, ' '));
      return original.apply(console, arguments);
    };
  }
})();
"""

# At the end of <body>: sortable tables (click or Enter on a header; numbers sort numerically by their
# ``data-sort`` value, ties keep their order), click-to-zoom figures (Escape closes) and the figure
# self-check (``data-images-ok`` on <body>).
PAGE_JS = """
(function () {
  function sortKey(cell) {
    var text = cell.getAttribute('data-sort');
    if (text === null) text = cell.textContent.trim();
    var number = parseFloat(text);
    return /^[-+]?(\\d|\\.\\d)/.test(text) && isFinite(number) ? {n: number} : {s: text.toLowerCase()};
  }
  function compare(a, b) {
    if ('n' in a && 'n' in b) return a.n - b.n;
    if ('n' in a) return -1;
    if ('n' in b) return 1;
    return a.s < b.s ? -1 : a.s > b.s ? 1 : 0;
  }
  function sortBy(th) {
    var body = th.closest('table').tBodies[0], column = th.cellIndex;
    var direction = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', direction);
    var rows = Array.prototype.map.call(body.rows, function (row, index) {
      return {row: row, key: sortKey(row.cells[column]), index: index};
    });
    rows.sort(function (a, b) {
      var order = compare(a.key, b.key);
      return (direction === 'ascending' ? order : -order) || a.index - b.index;
    });
    rows.forEach(function (item) { body.appendChild(item.row); });
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable thead th'), function (th) {
    th.tabIndex = 0;
    th.addEventListener('click', function () { sortBy(th); });
    th.addEventListener('keydown', function (event) {
      if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); sortBy(th); }
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll('figure img'), function (image) {
    image.addEventListener('click', function () { image.parentNode.classList.toggle('zoomed'); });
  });
  document.addEventListener('keydown', function (event) {
    if (event.key !== 'Escape') return;
    Array.prototype.forEach.call(document.querySelectorAll('figure.zoomed'), function (f) {
      f.classList.remove('zoomed');
    });
  });
  function openTarget() {
    var target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
    for (var node = target; node; node = node.parentElement) {
      if (node.tagName === 'DETAILS') node.open = true;
    }
  }
  window.addEventListener('hashchange', openTarget);
  openTarget();
  window.addEventListener('beforeprint', function () {
    Array.prototype.forEach.call(document.querySelectorAll('details'), function (d) { d.open = true; });
  });
  function checkImages() {
    var images = Array.prototype.slice.call(document.images);
    var ok = images.every(function (image) { return image.complete && image.naturalWidth > 0; });
    document.body.setAttribute('data-images', String(images.length));
    document.body.setAttribute('data-images-ok', ok ? 'true' : 'false');
  }
  if (document.readyState === 'complete') checkImages(); else window.addEventListener('load', checkImages);
})();
"""
