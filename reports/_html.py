"""HTML building blocks for the report pages: escaping, value formatting, tables, figures, the page shell.

Every string that reaches the page goes through ``esc`` (or ``cell``), so a study, parameter or attribute
name such as ``<script>`` shows as text. Figures carry their data as JSON, in which plotly writes ``<`` as
``\\u003c``, so no string can close their ``<script>`` either.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

__all__ = [
    "cell",
    "esc",
    "figure",
    "fmt_nested",
    "fmt_seconds",
    "fmt_value",
    "key_value_groups",
    "key_values",
    "page",
    "table",
]

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.6rem;margin:.4em 0 .1em;word-break:break-all}h2{font-size:1.2rem;margin:1.6em 0 .4em;
border-bottom:1px solid #ddd;padding-bottom:.2em}
.sub{color:#666;margin:0 0 1em}.note{color:#555;font-size:.9rem;max-width:900px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #e3e3e3;border-radius:6px;
padding:8px 12px;min-width:120px}.card b{display:block;font-size:1.15rem}
.card span{color:#666;font-size:.8rem}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;background:#fff;font-size:.85rem;margin:.3em 0}
th,td{border:1px solid #e3e3e3;padding:3px 8px;text-align:left;vertical-align:top;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.wrap{white-space:pre-wrap;min-width:240px}
th{background:#f0f0f0;position:sticky;top:0}
table.kv{max-width:100%}table.kv th{white-space:normal;overflow-wrap:break-word;max-width:18em}
table.kv td{white-space:normal;overflow-wrap:anywhere;text-align:left}
table.fit th{white-space:normal}td.text{white-space:normal;overflow-wrap:anywhere;min-width:10em}
.groups{display:flex;flex-wrap:wrap;gap:4px 16px;align-items:flex-start}.group{min-width:0;max-width:100%}
.group h4{font-size:.95rem;margin:.4em 0 .1em;color:#444}table.sortable th{cursor:pointer}
table.sortable th[data-order=asc]::after{content:" \\25B2"}
table.sortable th[data-order=desc]::after{content:" \\25BC"}
.figure{background:#fff;border:1px solid #e3e3e3;border-radius:6px;margin:.5em 0;padding:4px}
.state-COMPLETE{color:#1a7f37}.state-PRUNED{color:#9a6700}.state-FAIL{color:#cf222e}.state-RUNNING{color:#0969da}
a{color:#0969da}
"""

_SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.title = "sort";
    th.addEventListener("click", function () {
      var asc = th.dataset.order !== "asc";
      table.querySelectorAll("th").forEach(function (h) { delete h.dataset.order; });
      th.dataset.order = asc ? "asc" : "desc";
      var body = table.tBodies[0];
      var key = function (row) {
        var c = row.cells[col];
        return c.dataset.v !== undefined ? c.dataset.v : c.textContent;
      };
      var rows = Array.prototype.slice.call(body.rows).sort(function (a, b) {
        var x = key(a), y = key(b);
        var nx = parseFloat(x), ny = parseFloat(y);
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var c = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
        return asc ? c : -c;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def esc(value: Any) -> str:
    """``value`` as escaped HTML text (quotes too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def fmt_value(value: Any) -> str:
    """A cell's text: 4 significant digits for floats, ``–`` for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if number.is_integer() and abs(number) < 1e15:
            return str(int(number))
        return f"{number:.4g}"
    return str(value)


def fmt_nested(value: Any) -> str:
    """A setting's text: plain values as ``fmt_value``; lists and tables in the inline TOML of ``--set``
    (``[8, 16]``, ``{low = 1, high = 4, log = true}``), floats to 4 significant digits."""
    if isinstance(value, Mapping | list | tuple):
        return _toml(value)
    return fmt_value(value)


def _toml(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return fmt_value(value)


def fmt_seconds(seconds: float) -> str:
    """A duration for people: ``12.3 s``, ``4.5 min``, ``2.1 h``."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def cell(value: Any, *, text: str | None = None, cls: str = "") -> str:
    """One ``<td>``: escaped text, the raw number as its sort key, numbers right-aligned."""
    shown = fmt_value(value) if text is None else text
    number = isinstance(value, numbers.Real) and not isinstance(value, bool) and fmt_value(value) != "–"
    sort = f' data-v="{esc(repr(float(value)))}"' if number else (' data-v=""' if shown == "–" else "")
    classes = " ".join(c for c in ("num" if number else "", cls) if c)
    attr = f' class="{esc(classes)}"' if classes else ""
    return f"<td{attr}{sort}>{esc(shown)}</td>"


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    sortable: bool = False,
    table_id: str = "",
    classes: str = "",
) -> str:
    """A table from escaped header texts (escaped here) and rows of ready ``<td>`` cells (see ``cell``);
    ``classes``: its CSS classes (``kv``: values wrap; ``fit``: headers wrap)."""
    names = " ".join(c for c in (classes, "sortable" if sortable else "") if c)
    attrs = (f' id="{esc(table_id)}"' if table_id else "") + (f' class="{esc(names)}"' if names else "")
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    thead = f"<thead><tr>{head}</tr></thead>" if headers else ""
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    return f'<div class="scroll"><table{attrs}>{thead}<tbody>{body}</tbody></table></div>'


def key_values(items: Mapping[str, Any], *, table_id: str = "") -> str:
    """A two-column table of names and values whose long values wrap (lists and tables as ``fmt_nested``)."""
    rows = []
    for key, value in items.items():
        text = fmt_nested(value) if isinstance(value, Mapping | list | tuple) else None
        rows.append([f"<th>{esc(key)}</th>", cell(value, text=text)])
    return table([], rows, table_id=table_id, classes="kv")


def key_value_groups(groups: Mapping[str, Mapping[str, Any]], *, group_id: str = "") -> str:
    """Side-by-side titled ``key_values`` tables (one per group), wrapping onto new rows when narrow."""
    parts = [
        f'<div class="group"><h4>{esc(name)}</h4>{key_values(items)}</div>' for name, items in groups.items()
    ]
    attr = f' id="{esc(group_id)}"' if group_id else ""
    return f'<div class="groups"{attr}>{"".join(parts)}</div>'


def figure(fig: go.Figure, name: str) -> str:
    """A figure as a ``<div class="figure" data-figure=name>`` drawing itself with the page's plotly.js."""
    body = pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,
        div_id=f"fig-{name}",
        config=PLOTLY_CONFIG,
        validate=False,
        default_height=f"{fig.layout.height or 420}px",
    )
    return f'<div class="figure" data-figure="{esc(name)}">{body}</div>'


def page(title: str, body: str, *, plotlyjs: str = "inline") -> str:
    """A whole HTML page: ``title`` (escaped here), ``body`` (ready HTML) and plotly.js once, either
    ``"inline"`` (the page opens alone, offline) or the relative URL of a ``plotly.min.js`` beside it."""
    if plotlyjs == "inline":
        script = f'<script type="text/javascript">{get_plotlyjs()}</script>'
    else:
        script = f'<script src="{esc(plotlyjs)}" charset="utf-8"></script>'
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style>{script}</head>\n"
        f"<body><main>\n{body}\n</main><script>{_SORT_JS}</script></body></html>\n"
    )
