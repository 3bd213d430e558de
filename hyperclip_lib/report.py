"""A run's report: `<run>/report/index.html`, opened from the file system, no server.

The index holds what summary.md holds (each notebook's status and time with a link to it rendered, why any
failed, Tables 1 and 4, the time per stage) and every figure the run saved; `report/notebooks/NAME.html` is each
executed notebook rendered by nbconvert, inputs and outputs. Links are relative, so the run folder can be
copied or archived whole. A notebook is rendered again only when its executed file is newer than its page.
"""
from __future__ import annotations

import datetime
import html
from pathlib import Path

from .analysis import results_tables
from .batch import Run, status_rows
from .records import load_records, stage_times
from .store import atomic_write_bytes

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}pre{background:#f6f6f6;padding:.6em;overflow:auto}
.failed{color:#b00020;font-weight:bold}figure{display:inline-block;margin:0 1em 1.5em 0;vertical-align:top}
figure img{max-width:520px;border:1px solid #ddd}figcaption{font-size:90%;color:#555}"""


def executed_notebook(run: Run, name: str) -> Path | None:
    """The executed notebook of a job: NAME.ipynb, or NAME.FAILED.ipynb when its last run failed."""
    for path in (run.out / "notebooks" / f"{name}.ipynb", run.out / "notebooks" / f"{name}.FAILED.ipynb"):
        if path.exists():
            return path
    return None


def render_notebook(notebook: Path, page: Path) -> None:
    """nbconvert's HTML (lab template) of an executed notebook, written atomically."""
    import nbformat
    from nbconvert import HTMLExporter
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nbformat.read(notebook, as_version=4))
    atomic_write_bytes(page, body.encode())


def write_report(run: Run, status: dict[str, str]) -> Path:
    report = run.out / "report"
    parts = [f"<h1>Run <code>{html.escape(str(run.out))}</code> ({html.escape(run.profile)} profile)</h1>",
             f"<p>Command: <code>{html.escape(run.command)}</code><br>Report written "
             f"{datetime.datetime.now().isoformat(timespec='seconds')}</p>",
             "<h2>Notebooks</h2><table><tr><th>notebook</th><th>status</th><th>minutes</th><th>peak MiB</th>"
             "<th>executed file</th></tr>"]
    for name, state, minutes, peak in status_rows(run, status):
        notebook = executed_notebook(run, name)
        shown, executed = html.escape(name), ""
        if notebook is not None:
            page = report / "notebooks" / f"{name}.html"
            if not page.exists() or page.stat().st_mtime < notebook.stat().st_mtime:
                render_notebook(notebook, page)
            shown = f'<a href="notebooks/{name}.html">{shown}</a>'
            executed = f'<a href="../notebooks/{notebook.name}">{html.escape(notebook.name)}</a>'
        css = ' class="failed"' if state in ("failed", "not run") else ""
        parts.append(f"<tr><td>{shown}</td><td{css}>{html.escape(state)}</td><td>{minutes}</td><td>{peak}</td>"
                     f"<td>{executed}</td></tr>")
    parts.append("</table>")
    if run.failures:
        parts.append("<h2>Failures</h2>")
        for name, (why, engine_error) in run.failures.items():
            parts.append(f"<p><b>{html.escape(name)}</b> {html.escape(why)}</p>"
                         + (f"<pre>{html.escape(engine_error)}</pre>" if engine_error else ""))
    records = run.out / "records"
    if records.exists() and any(records.glob("*.json")):
        for title, table in results_tables(records).items():
            parts += [f"<h2>{html.escape(title)}</h2>", table.to_html(index=False, na_rep="")]
        parts += ["<h2>Time per stage</h2>", stage_times(load_records(records)).to_html(index=False, na_rep="")]
    figures = sorted((run.out / "figures").glob("*.png")) if (run.out / "figures").exists() else []
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [f'<figure><a href="../figures/{f.name}"><img src="../figures/{f.name}" alt="{html.escape(f.stem)}">'
                  f"</a><figcaption>{html.escape(f.name)}</figcaption></figure>" for f in figures]
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>HyperCLIP workbook run "
            f"{html.escape(run.out.name)}</title><style>{_STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    index = report / "index.html"
    atomic_write_bytes(index, page.encode())
    return index
