"""The monitoring dashboard: one self-contained HTML page with a view per role.

``render`` writes a single page that works offline: plotly.js is embedded once, the data is
embedded as one JSON block (``<script type="application/json" id="dashboard-data">``), and a
small inline script filters it and re-draws the charts and tables in the browser. There are no
external scripts, stylesheets or fonts.

Views (``<section data-view="...">``, switched by ``<button data-view-tab="...">``):

- ``executive`` (shown first): headline numbers with their trend against the previous period
  in plain words, and a status card per model version.
- ``data-scientist``: realized and estimated accuracy and ROC AUC over time, segment
  breakdown, confusion matrix, calibration, drift per feature, the champion's feature
  importance.
- ``ml-engineer``: volume, latency percentiles, quarantined rows, data-quality checks,
  freshness, pipeline runs and retrainings.
- ``product-manager``: feedback rates over time per version and segment, an A/B table of the
  versions, feedback-vs-metric correlations, scatter plots and the feedback-by-correctness and
  by-latency tables.

Common to all views: the filter bar (``filter-start``, ``filter-end``, ``filter-version``,
``filter-segment``), the alerts (``alerts``), the error drill-down (``errors`` with the day
picker ``errors-day``) and the per-day links (``links``). Every table has a "Download CSV"
button (``<button class="csv" data-table="NAME">``) that exports the filtered rows; the table
itself is drawn into ``<div id="table-NAME" data-rows="N">``.

``write_tables`` writes the same tables as CSV files beside the page.
"""

import datetime as dt
import decimal
import html
import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.offline

from feedback_pipeline.lib import storage

VIEWS = ["executive", "data-scientist", "ml-engineer", "product-manager"]
VIEW_TITLES = {
    "executive": "Executive",
    "data-scientist": "Data scientist",
    "ml-engineer": "ML engineer",
    "product-manager": "Product manager",
}
# Columns holding a day: shown and filtered as ``YYYY-MM-DD``.
DAY_COLUMNS = {"date", "night", "breach_day"}
# Tables whose versions fill the version filter, and whose segments fill the segment filter.
VERSION_TABLES = [
    "metrics",
    "drift",
    "calibration",
    "correlations",
    "by_correctness",
    "by_latency",
    "errors",
    "links",
]
SEGMENT_TABLES = ["metrics", "correlations"]
ALL = "all"


def _empty() -> pd.DataFrame:
    return pd.DataFrame()


@dataclass
class DashboardData:
    """Everything the page shows; any table may be empty.

    ``model_version == 'all'`` and ``segment == 'all'`` mark rows aggregated over every version
    or every segment. ``status`` holds the executive cards: ``{"model_version", "status"
    ('ok' | 'watch' | 'act'), "headline"}``.
    """

    model_name: str
    generated_at: str
    metrics: pd.DataFrame = field(default_factory=_empty)
    drift: pd.DataFrame = field(default_factory=_empty)
    calibration: pd.DataFrame = field(default_factory=_empty)
    feature_importance: pd.DataFrame = field(default_factory=_empty)
    correlations: pd.DataFrame = field(default_factory=_empty)
    by_correctness: pd.DataFrame = field(default_factory=_empty)
    by_latency: pd.DataFrame = field(default_factory=_empty)
    quarantine: pd.DataFrame = field(default_factory=_empty)
    checks: pd.DataFrame = field(default_factory=_empty)
    freshness: pd.DataFrame = field(default_factory=_empty)
    runs: pd.DataFrame = field(default_factory=_empty)
    retrainings: pd.DataFrame = field(default_factory=_empty)
    alerts: pd.DataFrame = field(default_factory=_empty)
    errors: pd.DataFrame = field(default_factory=_empty)
    links: pd.DataFrame = field(default_factory=_empty)
    status: list[dict] = field(default_factory=list)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The DataFrame fields by name, in declaration order."""
        out: dict[str, pd.DataFrame] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, pd.DataFrame):
                out[f.name] = value
        return out


# ---------------------------------------------------------------------------------------------
# JSON


def _jsonable(value: Any, column: str = "") -> Any:
    """A JSON-safe Python value: NaN/NaT/None become None, times become ISO strings."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | np.ndarray | pd.Series):
        return [_jsonable(v) for v in list(value)]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating | decimal.Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(value, pd.Timedelta | dt.timedelta):
        return pd.Timedelta(value).total_seconds()
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, pd.Timestamp | dt.datetime | np.datetime64):
        text = pd.Timestamp(value).isoformat()
        return text[:10] if column in DAY_COLUMNS else text
    if isinstance(value, pd.Period):
        return str(value)
    return str(value)


def _frame_payload(df: pd.DataFrame | None) -> dict[str, Any]:
    if df is None or not isinstance(df, pd.DataFrame):
        return {"columns": [], "rows": []}
    if any(name is not None for name in df.index.names):
        df = df.reset_index()
    columns = [str(c) for c in df.columns]
    rows = [
        {col: _jsonable(v, col) for col, v in zip(columns, row, strict=False)}
        for row in df.itertuples(index=False, name=None)
    ]
    return {"columns": columns, "rows": rows}


def _script_json(payload: Any) -> str:
    """JSON that is safe inside a ``<script>`` element (no ``</script>``, ``<!--``, U+2028)."""
    text = json.dumps(payload, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _values(data: DashboardData, tables: list[str], column: str) -> list[str]:
    found: set[str] = set()
    for name in tables:
        df = getattr(data, name)
        if isinstance(df, pd.DataFrame) and column in df.columns:
            found.update(str(v) for v in df[column].dropna().unique())
    if column == "model_version":
        found.update(str(s["model_version"]) for s in data.status if s.get("model_version"))
    found.discard(ALL)
    found.discard("")
    return sorted(found)


def _days(data: DashboardData) -> list[str]:
    """The days the filters span: the metrics' days, else every day any table mentions."""
    days: set[str] = set()
    tables = data.tables()
    if len(data.metrics) and "date" in data.metrics:
        tables = {"metrics": data.metrics}
    for name, df in tables.items():
        for column in ("date", "night") if name == "retrainings" else ("date",):
            if column in df.columns:
                for v in df[column].dropna().unique():
                    text = _jsonable(v, "date")
                    if isinstance(text, str) and re.match(r"^\d{4}-\d{2}-\d{2}$", text):
                        days.add(text)
    return sorted(days)


def payload(data: DashboardData) -> dict[str, Any]:
    """What the page embeds: every table as columns and row objects, and the filter values."""
    days = _days(data)
    return {
        "model_name": data.model_name,
        "generated_at": _jsonable(data.generated_at),
        "versions": _values(data, VERSION_TABLES, "model_version"),
        "segments": _values(data, SEGMENT_TABLES, "segment"),
        "first_day": days[0] if days else None,
        "last_day": days[-1] if days else None,
        "tables": {name: _frame_payload(df) for name, df in data.tables().items()},
        "status": [_jsonable(dict(card)) for card in (data.status or [])],
    }


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
:root { --bg: #f6f7f9; --card: #fff; --ink: #24292f; --muted: #6a737d; --line: #e3e6ea;
  --accent: #4c78a8; --ok: #3f8f5a; --watch: #c48a1b; --act: #c0504d; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); font-size: 14px; line-height: 1.45;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
header { background: var(--card); border-bottom: 1px solid var(--line); padding: 14px 24px 0; }
header h1 { margin: 0; font-size: 20px; font-weight: 600; }
header .meta { margin: 2px 0 10px; color: var(--muted); font-size: 12px; }
nav.tabs { display: flex; gap: 4px; flex-wrap: wrap; }
nav.tabs button { border: 0; background: none; padding: 8px 14px; font: inherit; cursor: pointer;
  color: var(--muted); border-bottom: 3px solid transparent; }
nav.tabs button.active { color: var(--ink); border-bottom-color: var(--accent); font-weight: 600; }
.filters { display: flex; flex-wrap: wrap; gap: 16px; align-items: end; padding: 12px 24px;
  background: var(--card); border-bottom: 1px solid var(--line); position: sticky; top: 0;
  z-index: 10; }
.filters label, .inline-label { display: flex; flex-direction: column; font-size: 12px;
  color: var(--muted); gap: 2px; }
.inline-label { flex-direction: row; align-items: center; gap: 6px; }
select, input[type=date] { font: inherit; padding: 4px 6px; border: 1px solid var(--line);
  border-radius: 4px; background: #fff; color: var(--ink); }
main { padding: 16px 24px 40px; max-width: 1500px; margin: 0 auto; }
section { margin-bottom: 24px; }
h2 { font-size: 16px; font-weight: 600; margin: 8px 0 10px; }
h3 { font-size: 14px; font-weight: 600; margin: 0 0 6px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 14px 16px; min-width: 0; }
.card.wide { grid-column: 1 / -1; }
.caption { color: var(--muted); font-size: 12px; margin: 0 0 6px; }
.no-data { color: var(--muted); font-style: italic; margin: 12px 0; }
.headlines { display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr));
  gap: 16px; margin-bottom: 16px; }
.headline .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; }
.headline .value { font-size: 28px; font-weight: 600; margin: 4px 0; }
.headline .trend { font-size: 13px; color: var(--muted); }
.headline[data-trend=up] .trend { color: var(--ok); }
.headline[data-trend=down] .trend { color: var(--act); }
.headline#headline-alerts[data-trend=up] .trend { color: var(--act); }
.headline#headline-alerts[data-trend=down] .trend { color: var(--ok); }
.status-cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr));
  gap: 16px; }
.status-card { border-left: 5px solid var(--muted); }
.status-card[data-status=ok] { border-left-color: var(--ok); }
.status-card[data-status=watch] { border-left-color: var(--watch); }
.status-card[data-status=act] { border-left-color: var(--act); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 11px;
  font-weight: 600; text-transform: uppercase; color: #fff; background: var(--muted);
  margin-left: 6px; }
.badge.ok { background: var(--ok); } .badge.watch { background: var(--watch); }
.badge.act { background: var(--act); }
.table-head { display: flex; align-items: center; gap: 12px; }
.table-head h3 { margin-right: auto; }
button.csv { font: inherit; font-size: 12px; padding: 3px 10px; border: 1px solid var(--line);
  border-radius: 4px; background: #fff; cursor: pointer; color: var(--accent); }
button.csv:hover { background: #eef3f8; }
.scroll { overflow: auto; max-height: 460px; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { position: sticky; top: 0; background: #fafbfc; font-weight: 600; color: var(--muted);
  white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.fail td { background: #fbeceb; }
tr.sev-critical td, tr.sev-error td, tr.sev-high td { background: #fbeceb; }
tr.sev-warning td, tr.sev-warn td, tr.sev-medium td { background: #fdf6e7; }
.chart { width: 100%; min-height: 300px; }
a { color: var(--accent); }
"""

_SCRIPT = r"""
(() => {
  "use strict";
  const DATA = JSON.parse(document.getElementById("dashboard-data").textContent);
  const CONFIG = {displaylogo: false, responsive: true};
  const FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif";
  const PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2",
    "#9d755d", "#bab0ac", "#eeca3b", "#ff9da6"];
  const GRID = "#eceef1";
  const BLUES = [[0, "#f2f6fa"], [1, "#4c78a8"]];
  const HEAT = [[0, "#fbf6ea"], [0.5, "#f2b26b"], [1, "#c0504d"]];
  const DIVERGING = [[0, "#4c78a8"], [0.5, "#f7f7f7"], [1, "#c0504d"]];
  const MAX_ROWS = 500;
  const state = {view: "executive", tables: {}};
  const colors = new Map();
  (DATA.versions || []).forEach((v) => color(v));

  // ---- helpers -------------------------------------------------------------------------
  function byId(id) { return document.getElementById(id); }
  function tableOf(name) { return (DATA.tables && DATA.tables[name]) || {columns: [], rows: []}; }
  function rowsOf(name) { return tableOf(name).rows || []; }
  function colsOf(name) { return (tableOf(name).columns || []).slice(); }
  function color(key) {
    if (!colors.has(key)) colors.set(key, PALETTE[colors.size % PALETTE.length]);
    return colors.get(key);
  }
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }
  function blank(v) { return v === null || v === undefined || v === ""; }
  function day(v) { return blank(v) ? "" : String(v).slice(0, 10); }
  function num(v) {
    if (typeof v === "number" && isFinite(v)) return v;
    if (typeof v === "boolean") return v ? 1 : 0;
    return null;
  }
  function verOf(r) { return blank(r.model_version) ? "all" : String(r.model_version); }
  function segOf(r) { return blank(r.segment) ? "all" : String(r.segment); }
  function cmp(a, b) {
    if (a === b) return 0;
    if (a === null || a === undefined) return 1;
    if (b === null || b === undefined) return -1;
    return a < b ? -1 : 1;
  }
  function sortBy(rs, key, desc) {
    return rs.slice().sort((a, b) => (desc ? -1 : 1) * cmp(a[key], b[key]));
  }
  function groupBy(rs, key) {
    const groups = new Map();
    rs.forEach((r) => {
      const k = r[key] === null || r[key] === undefined ? "all" : String(r[key]);
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(r);
    });
    return new Map([...groups.entries()].sort((a, b) => cmp(a[0], b[0])));
  }
  function sum(rs, col) {
    let total = 0, n = 0;
    rs.forEach((r) => { const v = num(r[col]); if (v !== null) { total += v; n += 1; } });
    return n ? total : null;
  }
  function wmean(rs, col, wcol) {
    let s = 0, w = 0, plain = 0, n = 0;
    rs.forEach((r) => {
      const v = num(r[col]);
      if (v === null) return;
      plain += v; n += 1;
      const wt = wcol ? num(r[wcol]) : 1;
      if (wt !== null && wt > 0) { s += v * wt; w += wt; }
    });
    if (!n) return null;
    return w > 0 ? s / w : plain / n;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return v.toLocaleString("en-US");
      if (Math.abs(v) >= 1000) return v.toLocaleString("en-US", {maximumFractionDigits: 1});
      return String(Number(v.toPrecision(4)));
    }
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }
  function pct(v) { return v === null ? "–" : (100 * v).toFixed(1) + "%"; }
  function addDays(iso, n) {
    return new Date(Date.parse(iso + "T00:00:00Z") + n * 86400000).toISOString().slice(0, 10);
  }
  function daysBetween(a, b) {
    return Math.round((Date.parse(b + "T00:00:00Z") - Date.parse(a + "T00:00:00Z")) / 86400000);
  }

  // ---- filters ---------------------------------------------------------------------------
  function filters() {
    return {
      start: byId("filter-start").value || "",
      end: byId("filter-end").value || "",
      version: byId("filter-version").value || "all",
      segment: byId("filter-segment").value || "all",
    };
  }
  function inRange(v, f) {
    const d = day(v);
    if (!d) return true;
    return (!f.start || d >= f.start) && (!f.end || d <= f.end);
  }
  function matchVersion(r, f) {
    return f.version === "all" || r.model_version === null || r.model_version === undefined ||
      String(r.model_version) === f.version;
  }
  function matchSegment(r, f) {
    return f.segment === "all" || r.segment === null || r.segment === undefined ||
      String(r.segment) === f.segment;
  }
  // One series per version: the chosen version, else every real version (else the aggregate).
  function perVersion(rs, f) {
    if (f.version !== "all") return rs.filter((r) => verOf(r) === f.version);
    const real = rs.filter((r) => verOf(r) !== "all");
    return real.length ? real : rs;
  }
  // One total: the chosen version, else the 'all' rows (else every version's rows).
  function aggregate(rs, f) {
    if (f.version !== "all") return rs.filter((r) => verOf(r) === f.version);
    const agg = rs.filter((r) => verOf(r) === "all");
    return agg.length ? agg : rs;
  }
  function metricsFor(f, segment) {
    return rowsOf("metrics").filter((r) => inRange(r.date, f) && segOf(r) === segment);
  }

  // ---- charts ----------------------------------------------------------------------------
  function layout(extra) {
    const base = {
      font: {family: FONT, size: 12, color: "#24292f"},
      margin: {l: 56, r: 16, t: 8, b: 40},
      height: 320,
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "#ffffff",
      legend: {orientation: "h", y: -0.18},
      xaxis: {gridcolor: GRID, automargin: true},
      yaxis: {gridcolor: GRID, automargin: true, zeroline: false},
      hovermode: "closest",
    };
    return Object.assign(base, extra || {});
  }
  function hasValues(trace) {
    const ys = trace.type === "heatmap" ? [].concat(...(trace.z || [])) :
      (trace.orientation === "h" ? trace.x : trace.y) || [];
    return ys.some((v) => num(v) !== null);
  }
  function plot(id, traces, lay) {
    const div = byId(id);
    if (!div) return;
    const note = byId(id + "-empty");
    const useful = (traces || []).filter((t) => t.keep || hasValues(t));
    if (!useful.some((t) => !t.keep)) {
      if (div.classList.contains("js-plotly-plot")) Plotly.purge(div);
      div.hidden = true;
      div.dataset.traces = "0";
      if (note) note.hidden = false;
      return;
    }
    if (note) note.hidden = true;
    div.hidden = false;
    useful.forEach((t) => { delete t.keep; });
    div.dataset.traces = String(useful.length);
    lay = lay || layout();
    if (lay.xaxis && lay.xaxis.type === "date") {
      // Daily data: label days, not hours; every day when there are few of them.
      const xs = [...new Set([].concat(...useful.map((t) => t.x || [])))].sort();
      lay.xaxis.tickformat = "%Y-%m-%d";
      lay.xaxis.hoverformat = "%Y-%m-%d";
      if (xs.length <= 15) Object.assign(lay.xaxis, {tickmode: "array", tickvals: xs});
    }
    Plotly.react(div, useful, lay, CONFIG);
  }
  function lines(rs, col, opts) {
    opts = opts || {};
    const traces = [];
    for (const [k, g] of groupBy(rs, opts.key || "model_version")) {
      const s = sortBy(g, "date").filter((r) => num(r[col]) !== null);
      if (!s.length) continue;
      traces.push({
        type: "scatter", mode: "lines+markers",
        name: k + (opts.suffix || ""),
        x: s.map((r) => day(r.date)), y: s.map((r) => r[col]),
        line: {color: color(k), dash: opts.dash || "solid", width: 2},
        marker: {color: color(k), size: 7,
          symbol: s.map((r) => (r.maturity === "provisional" ? "circle-open" : "circle"))},
        text: s.map((r) => (r.maturity ? String(r.maturity) : "")),
        hovertemplate: "%{x}<br>" + col + " %{y:.4g}<br>%{text}<extra>%{fullData.name}</extra>",
      });
    }
    return traces;
  }
  function dateAxis(title, category) {
    const x = category ? {type: "category", categoryorder: "category ascending"} : {type: "date"};
    return {xaxis: Object.assign({gridcolor: GRID, automargin: true}, x),
      yaxis: {gridcolor: GRID, automargin: true, zeroline: false, title: {text: title}}};
  }

  function renderDataScientist(f) {
    const pv = perVersion(metricsFor(f, f.segment), f);
    plot("chart-accuracy",
      lines(pv, "accuracy", {suffix: " realized"})
        .concat(lines(pv, "estimated_accuracy", {suffix: " estimated", dash: "dash"})),
      layout(dateAxis("accuracy")));
    plot("chart-auc",
      lines(pv, "roc_auc", {suffix: " realized"})
        .concat(lines(pv, "estimated_roc_auc", {suffix: " estimated", dash: "dash"})),
      layout(dateAxis("ROC AUC")));

    const bySeg = groupBy(aggregate(rowsOf("metrics").filter(
      (r) => inRange(r.date, f) && segOf(r) !== "all"), f), "segment");
    const segs = [...bySeg.keys()];
    const shade = (strong, weak) => segs.map(
      (s) => (f.segment === "all" || s === f.segment ? strong : weak));
    plot("chart-segments", [
      {type: "bar", name: "realized accuracy", x: segs,
        y: segs.map((s) => wmean(bySeg.get(s), "accuracy", "n_labeled")),
        marker: {color: shade("#4c78a8", "#b8cbe0")}},
      {type: "bar", name: "estimated accuracy", x: segs,
        y: segs.map((s) => wmean(bySeg.get(s), "estimated_accuracy", "n_predictions")),
        marker: {color: shade("#f58518", "#f9cf9f")}},
    ], layout({barmode: "group", yaxis: {gridcolor: GRID, title: {text: "accuracy"}}}));

    const cm = aggregate(metricsFor(f, f.segment), f);
    const cells = ["tn", "fp", "fn", "tp"].map((c) => sum(cm, c));
    plot("chart-confusion", cells.every((c) => c === null) ? [] : [{
      type: "heatmap", x: ["predicted 0", "predicted 1"], y: ["actual 0", "actual 1"],
      z: [[cells[0] || 0, cells[1] || 0], [cells[2] || 0, cells[3] || 0]],
      colorscale: BLUES, showscale: false, texttemplate: "%{z}",
      hovertemplate: "%{y}, %{x}: %{z}<extra></extra>",
    }], layout({height: 300, yaxis: {autorange: "reversed"}, xaxis: {side: "bottom"}}));

    const cal = [];
    for (const [k, g] of groupBy(perVersion(rowsOf("calibration"), f), "model_version")) {
      const s = sortBy(g, "mean_score").filter((r) => num(r.mean_score) !== null);
      cal.push({type: "scatter", mode: "lines+markers", name: k,
        x: s.map((r) => r.mean_score), y: s.map((r) => r.observed_rate),
        text: s.map((r) => "n " + fmt(r.n)), line: {color: color(k)},
        hovertemplate: "score %{x:.3f}<br>observed %{y:.3f}<br>%{text}" +
          "<extra>%{fullData.name}</extra>"});
    }
    if (cal.length) {
      cal.push({type: "scatter", mode: "lines", name: "perfect", x: [0, 1], y: [0, 1], keep: true,
        line: {color: "#9aa0a6", dash: "dot", width: 1}, hoverinfo: "skip"});
    }
    plot("chart-calibration", cal, layout({
      xaxis: {gridcolor: GRID, title: {text: "mean score"}, range: [0, 1]},
      yaxis: {gridcolor: GRID, title: {text: "observed rate"}, range: [0, 1]}}));

    const drift = rowsOf("drift").filter((r) => inRange(r.date, f) && matchVersion(r, f));
    const dates = [...new Set(drift.map((r) => day(r.date)))].sort();
    const columns = [...new Set(drift.map((r) => String(r.column)))].sort();
    const score = new Map(), drifted = new Map();
    drift.forEach((r) => {
      const key = day(r.date) + "|" + r.column, v = num(r.drift_score);
      if (v !== null && (!score.has(key) || v > score.get(key))) score.set(key, v);
      if (r.drifted === true) drifted.set(key, true);
    });
    plot("chart-drift", drift.length ? [{
      type: "heatmap", x: dates, y: columns, colorscale: HEAT,
      z: columns.map((c) => dates.map(
        (d) => (score.has(d + "|" + c) ? score.get(d + "|" + c) : null))),
      text: columns.map((c) => dates.map((d) => (drifted.get(d + "|" + c) ? "drifted" : ""))),
      hovertemplate: "%{y} on %{x}<br>drift score %{z:.3f} %{text}<extra></extra>",
      colorbar: {thickness: 10},
    }] : [], layout({height: Math.max(260, 22 * columns.length + 80),
      xaxis: {type: "category", automargin: true}, yaxis: {automargin: true}}));

    const share = [];
    for (const [k, g] of groupBy(perVersion(drift, f), "model_version")) {
      const perDay = groupBy(g, "date");
      const ds = [...perDay.keys()];
      share.push({type: "scatter", mode: "lines+markers", name: k, line: {color: color(k)},
        x: ds, y: ds.map((d) => {
          const rs = perDay.get(d);
          return rs.filter((r) => r.drifted === true).length / rs.length;
        })});
    }
    plot("chart-drift-share", share, layout(dateAxis("share of drifted columns")));

    const imp = sortBy(
      rowsOf("feature_importance").filter((r) => num(r.importance) !== null), "importance");
    plot("chart-importance", imp.length ? [{
      type: "bar", orientation: "h",
      y: imp.map((r) => String(r.feature)), x: imp.map((r) => r.importance),
      error_x: {type: "data", array: imp.map((r) => num(r.std) || 0), visible: true,
        color: "#9aa0a6"},
      marker: {color: "#4c78a8"}, hovertemplate: "%{y}: %{x:.4f}<extra></extra>",
    }] : [], layout({height: Math.max(260, 22 * imp.length + 80),
      xaxis: {gridcolor: GRID, title: {text: "permutation importance"}},
      yaxis: {automargin: true}}));
  }

  function renderMlEngineer(f) {
    const pv = perVersion(metricsFor(f, f.segment), f);
    const volume = [];
    for (const [k, g] of groupBy(pv, "model_version")) {
      const s = sortBy(g, "date");
      volume.push({type: "bar", name: k, x: s.map((r) => day(r.date)),
        y: s.map((r) => r.n_predictions), marker: {color: color(k)}});
    }
    plot("chart-volume", volume,
      layout(Object.assign({barmode: "stack"}, dateAxis("predictions", true))));

    let latency = [];
    [["latency_p50_ms", " p50", "dot"], ["latency_p95_ms", " p95", "dash"],
      ["latency_p99_ms", " p99", "solid"]].forEach(([col, suffix, dash]) => {
      latency = latency.concat(lines(pv, col, {suffix: suffix, dash: dash}));
    });
    plot("chart-latency", latency, layout(dateAxis("latency (ms)")));

    const q = rowsOf("quarantine").filter((r) => inRange(r.date, f));
    const qDates = [...new Set(q.map((r) => day(r.date)))].sort();
    const quarantine = [];
    for (const [reason, g] of groupBy(q, "reason")) {
      const perDay = groupBy(g, "date");
      quarantine.push({type: "bar", name: reason, x: qDates, marker: {color: color("q:" + reason)},
        y: qDates.map((d) => (perDay.has(d) ? sum(perDay.get(d), "rows") || 0 : 0))});
    }
    plot("chart-quarantine", quarantine,
      layout(Object.assign({barmode: "stack"}, dateAxis("quarantined rows", true))));
  }

  function renderProductManager(f) {
    const signal = byId("pm-signal").value || "thumbs_up_share";
    const pv = perVersion(metricsFor(f, f.segment), f);
    plot("chart-feedback", lines(pv, signal), layout(dateAxis(signal.replace(/_/g, " "))));
    const segRows = aggregate(
      rowsOf("metrics").filter((r) => inRange(r.date, f) && segOf(r) !== "all"), f);
    plot("chart-feedback-segments", lines(segRows, signal, {key: "segment"}),
      layout(dateAxis(signal.replace(/_/g, " "))));

    let corr = rowsOf("correlations").filter((r) => num(r.lag) === null || num(r.lag) === 0);
    if (f.version !== "all" || corr.some((r) => verOf(r) === "all")) {
      corr = corr.filter((r) => verOf(r) === f.version);
    } else if (corr.length) {
      const first = verOf(corr[0]);
      corr = corr.filter((r) => verOf(r) === first);
    }
    corr = corr.filter((r) => segOf(r) === f.segment);
    const signals = [...new Set(corr.map((r) => String(r.signal)))].sort();
    const metrics = [...new Set(corr.map((r) => String(r.metric)))].sort();
    const cell = new Map();
    corr.forEach((r) => cell.set(r.signal + "|" + r.metric, r));
    const significant = (r) => {
      const p = num(r.p_adjusted) !== null ? num(r.p_adjusted) : num(r.p_value);
      return p !== null && p < 0.05;
    };
    const pick = (fn) => signals.map((s) => metrics.map((m) => {
      const r = cell.get(s + "|" + m);
      return r ? fn(r) : null;
    }));
    const rhoText = (r) => (num(r.rho) === null ? "" :
      num(r.rho).toFixed(2) + (significant(r) ? "" : " n.s."));
    plot("chart-corr", corr.length ? [{
      type: "heatmap", x: metrics, y: signals, zmin: -1, zmax: 1, colorscale: DIVERGING,
      z: pick((r) => num(r.rho)),
      text: pick(rhoText),
      customdata: pick(
        (r) => "n " + fmt(r.n) + ", p adj " + fmt(r.p_adjusted) + "<br>" + fmt(r.verdict)),
      texttemplate: "%{text}", colorbar: {thickness: 10},
      hovertemplate: "%{y} vs %{x}<br>rho %{z:.3f}<br>%{customdata}<extra></extra>",
    }] : [], layout({height: Math.max(280, 36 * signals.length + 110),
      xaxis: {automargin: true, tickangle: -30}, yaxis: {automargin: true}}));

    const scatter = (xcol, ycol) => {
      const out = [];
      for (const [k, g] of groupBy(pv, "model_version")) {
        const s = g.filter((r) => num(r[xcol]) !== null && num(r[ycol]) !== null);
        if (!s.length) continue;
        out.push({type: "scatter", mode: "markers", name: k,
          x: s.map((r) => r[xcol]), y: s.map((r) => r[ycol]),
          text: s.map((r) => day(r.date)), marker: {color: color(k), size: 9, opacity: 0.8},
          hovertemplate: "%{text}<br>" + xcol + " %{x:.4g}<br>" + ycol + " %{y:.4g}" +
            "<extra>%{fullData.name}</extra>"});
      }
      return out;
    };
    plot("chart-scatter-thumbs", scatter("thumbs_up_share", "accuracy"), layout({
      xaxis: {gridcolor: GRID, title: {text: "thumbs-up share"}},
      yaxis: {gridcolor: GRID, title: {text: "accuracy"}}}));
    plot("chart-scatter-latency", scatter("latency_p95_ms", "click_rate"), layout({
      xaxis: {gridcolor: GRID, title: {text: "latency p95 (ms)"}},
      yaxis: {gridcolor: GRID, title: {text: "click rate"}}}));
  }

  const RENDERERS = {
    "data-scientist": renderDataScientist,
    "ml-engineer": renderMlEngineer,
    "product-manager": renderProductManager,
    "executive": () => {},
  };

  // ---- tables ----------------------------------------------------------------------------
  function renderTable(name, columns, rs, opts) {
    opts = opts || {};
    state.tables[name] = {columns: columns.slice(), rows: rs};
    const host = byId("table-" + name);
    if (!host) return;
    host.textContent = "";
    host.dataset.rows = String(rs.length);
    if (!rs.length) {
      host.appendChild(el("p", "no-data", opts.empty || "No data for the current filters."));
      return;
    }
    const table = el("table"), thead = el("thead"), head = el("tr"), tbody = el("tbody");
    columns.forEach((c) => head.appendChild(el("th", "", c.replace(/_/g, " "))));
    thead.appendChild(head);
    rs.slice(0, MAX_ROWS).forEach((r) => {
      const tr = el("tr", opts.rowClass ? opts.rowClass(r) : "");
      columns.forEach((c) => {
        const td = el("td");
        const custom = opts.cell ? opts.cell(c, r[c], r) : null;
        if (custom) td.appendChild(custom);
        else {
          td.textContent = fmt(r[c]);
          if (typeof r[c] === "number") td.className = "num";
        }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    table.appendChild(thead);
    table.appendChild(tbody);
    const scroll = el("div", "scroll");
    scroll.appendChild(table);
    host.appendChild(scroll);
    if (rs.length > MAX_ROWS) {
      host.appendChild(el("p", "caption", "Showing the first " + MAX_ROWS + " of " + rs.length +
        " rows; Download CSV has them all."));
    }
  }
  const SEVERITY = {critical: 0, error: 1, high: 1, act: 1,
    warning: 2, warn: 2, medium: 2, watch: 2};
  function severityRank(r) {
    const s = String(r.severity || "").toLowerCase();
    return s in SEVERITY ? SEVERITY[s] : 3;
  }
  function sevClass(r) {
    return r.severity ? "sev-" + String(r.severity).toLowerCase().replace(/[^a-z]/g, "") : "";
  }
  function runDay(r) {
    return /^\d{4}-\d{2}-\d{2}/.test(String(r.partition || "")) ? r.partition : r.started_at;
  }
  function safeUrl(u) {
    const s = String(u || "").trim();
    if (!s || /^(javascript|data|vbscript):/i.test(s)) return null;
    return s;
  }
  const LINK_TEXT = {evidently_html: "Evidently report", mlflow_url: "MLflow run",
    dagster_url: "Dagster asset"};
  function linkCell(c, v) {
    if (!(c in LINK_TEXT) || v === null || v === undefined) return null;
    const url = safeUrl(v);
    if (!url) return null;
    const a = el("a", "", LINK_TEXT[c]);
    a.href = url;
    a.title = url;
    if (/^https?:/i.test(url)) { a.target = "_blank"; a.rel = "noopener"; }
    return a;
  }
  function abTable(f) {
    const rs = metricsFor(f, f.segment);
    const real = rs.filter((r) => verOf(r) !== "all");
    const out = [];
    for (const [v, g] of groupBy(real.length ? real : rs, "model_version")) {
      out.push({
        model_version: v,
        days: new Set(g.map((r) => day(r.date))).size,
        n_predictions: sum(g, "n_predictions"),
        n_labeled: sum(g, "n_labeled"),
        accuracy: wmean(g, "accuracy", "n_labeled"),
        estimated_accuracy: wmean(g, "estimated_accuracy", "n_predictions"),
        roc_auc: wmean(g, "roc_auc", "n_labeled"),
        thumbs_up_share: wmean(g, "thumbs_up_share", "n_predictions"),
        mean_rating: wmean(g, "mean_rating", "n_predictions"),
        negative_feedback_share: wmean(g, "negative_feedback_share", "n_predictions"),
        click_rate: wmean(g, "click_rate", "n_predictions"),
        conversion_rate: wmean(g, "conversion_rate", "n_predictions"),
        comment_sentiment: wmean(g, "comment_sentiment", "n_predictions"),
        latency_p95_ms: wmean(g, "latency_p95_ms"),
        business_value: sum(g, "business_value"),
      });
    }
    return out;
  }
  const AB_COLUMNS = ["model_version", "days", "n_predictions", "n_labeled", "accuracy",
    "estimated_accuracy", "roc_auc", "thumbs_up_share", "mean_rating", "negative_feedback_share",
    "click_rate", "conversion_rate", "comment_sentiment", "latency_p95_ms", "business_value"];

  function renderErrorsTable(f) {
    const chosen = byId("errors-day").value;
    const rs = rowsOf("errors").filter((r) => day(r.date) === chosen && matchVersion(r, f));
    const confidence = (r) => (num(r.score) === null ? -1 : Math.abs(num(r.score) - 0.5));
    rs.sort((a, b) => confidence(b) - confidence(a));
    renderTable("errors", colsOf("errors"), rs, {empty: chosen ?
      "No wrong predictions on this day." : "No wrong predictions in the filtered days."});
  }
  function renderErrors(f) {
    const select = byId("errors-day");
    const previous = select.value;
    const days = [...new Set(rowsOf("errors")
      .filter((r) => inRange(r.date, f) && matchVersion(r, f))
      .map((r) => day(r.date)).filter((d) => d))].sort().reverse();
    select.textContent = "";
    days.forEach((d) => { const o = el("option", "", d); o.value = d; select.appendChild(o); });
    select.disabled = !days.length;
    if (days.length) select.value = days.indexOf(previous) >= 0 ? previous : days[0];
    renderErrorsTable(f);
  }

  function renderTables(f) {
    renderTable("ab", AB_COLUMNS, abTable(f));
    const checkRank = (r) => (r.passed === false ? 0 : r.passed === true ? 2 : 1);
    renderTable("checks", colsOf("checks"), rowsOf("checks").filter((r) => inRange(r.date, f))
      .sort((a, b) => checkRank(a) - checkRank(b) || severityRank(a) - severityRank(b) ||
        -cmp(a.date, b.date)),
      {rowClass: (r) => (r.passed === false ? "fail" : "")});
    renderTable("freshness", colsOf("freshness"), rowsOf("freshness").slice());
    renderTable("runs", colsOf("runs"),
      sortBy(rowsOf("runs").filter((r) => inRange(runDay(r), f)), "started_at", true));
    renderTable("retrainings", colsOf("retrainings"),
      sortBy(rowsOf("retrainings").filter((r) => inRange(r.night, f)), "night", true));
    renderTable("correlations", colsOf("correlations"),
      rowsOf("correlations").filter((r) => matchVersion(r, f) && matchSegment(r, f)));
    ["by_correctness", "by_latency"].forEach((name) => {
      renderTable(name, colsOf(name), rowsOf(name).filter((r) => matchVersion(r, f)));
    });
    const alerts = rowsOf("alerts").filter((r) => inRange(r.date, f))
      .sort((a, b) => -cmp(a.date, b.date) || severityRank(a) - severityRank(b));
    renderTable("alerts", colsOf("alerts"), alerts,
      {rowClass: sevClass, empty: "No alerts in the filtered days."});
    byId("alerts-count").textContent = alerts.length ? "(" + alerts.length + ")" : "";
    renderErrors(f);
    renderTable("links", colsOf("links"),
      sortBy(rowsOf("links").filter((r) => inRange(r.date, f) && matchVersion(r, f)), "date", true),
      {cell: linkCell});
  }

  // ---- executive -------------------------------------------------------------------------
  function periodName(n) {
    if (n === 1) return "the day before";
    if (n === 7) return "the week before";
    return "the previous " + n + " days";
  }
  function setHeadline(id, value, trend, direction) {
    const card = byId(id);
    card.querySelector(".value").textContent = value;
    card.querySelector(".trend").textContent = trend;
    card.dataset.trend = direction;
  }
  function pointsTrend(cur, prev, label) {
    if (cur === null) return ["no data in this period", "none"];
    if (prev === null) return ["no earlier period to compare", "none"];
    const diff = 100 * (cur - prev);
    if (Math.abs(diff) < 0.05) return ["unchanged from " + label, "flat"];
    return [(diff > 0 ? "up " : "down ") + Math.abs(diff).toFixed(1) + " points from " + label,
      diff > 0 ? "up" : "down"];
  }
  function renderExecutive(f) {
    const all = rowsOf("metrics").map((r) => day(r.date)).filter((d) => d).sort();
    const start = f.start || all[0] || DATA.first_day;
    const end = f.end || all[all.length - 1] || DATA.last_day;
    const money = (v) => (v === null ? "–" : v.toLocaleString("en-US", {maximumFractionDigits: 0}));
    if (!start || !end || start > end) {
      ["headline-accuracy", "headline-thumbs", "headline-value", "headline-alerts"]
        .forEach((id) => setHeadline(id, "–", "no data in this period", "none"));
    } else {
      const n = daysBetween(start, end) + 1;
      const prev = {start: addDays(start, -n), end: addDays(start, -1)};
      const label = periodName(n);
      const pick = (range) => aggregate(rowsOf("metrics").filter(
        (r) => segOf(r) === f.segment && inRange(r.date, range) && day(r.date)), f);
      const cur = pick({start: start, end: end}), old = pick(prev);
      const acc = [wmean(cur, "accuracy", "n_labeled"), wmean(old, "accuracy", "n_labeled")];
      setHeadline("headline-accuracy", pct(acc[0]), ...pointsTrend(acc[0], acc[1], label));
      const th = [wmean(cur, "thumbs_up_share", "n_predictions"),
        wmean(old, "thumbs_up_share", "n_predictions")];
      setHeadline("headline-thumbs", pct(th[0]), ...pointsTrend(th[0], th[1], label));
      // The total of the period; compared per day, as the periods may hold different days.
      const total = sum(cur, "business_value");
      const perDay = (rs) => {
        const t = sum(rs, "business_value");
        const n = new Set(rs.filter((r) => num(r.business_value) !== null).map((r) => day(r.date)));
        return t === null || !n.size ? null : t / n.size;
      };
      const bv = [perDay(cur), perDay(old)];
      let words = ["no data in this period", "none"];
      if (bv[0] !== null && bv[1] === null) words = ["no earlier period to compare", "none"];
      else if (bv[0] !== null && bv[1] !== null) {
        const diff = bv[0] - bv[1];
        const way = diff > 0 ? "up" : "down";
        if (Math.abs(diff) < 1e-9) words = ["unchanged a day from " + label, "flat"];
        else if (bv[1] !== 0) {
          const rel = Math.abs(100 * diff / Math.abs(bv[1])).toFixed(1);
          words = [way + " " + rel + "% a day from " + label, way];
        } else words = [way + " " + money(Math.abs(diff)) + " a day from " + label, way];
      }
      setHeadline("headline-value", money(total), words[0], words[1]);
      const alerts = rowsOf("alerts");
      const nowCount = alerts.filter(
        (r) => day(r.date) && inRange(r.date, {start: start, end: end})).length;
      const oldCount = alerts.filter((r) => day(r.date) && inRange(r.date, prev)).length;
      const d = nowCount - oldCount;
      setHeadline("headline-alerts", String(nowCount),
        d === 0 ? "same as " + label :
          Math.abs(d) + (d > 0 ? " more than " : " fewer than ") + label,
        d === 0 ? "flat" : d > 0 ? "up" : "down");
    }
    const host = byId("status-cards");
    host.textContent = "";
    const cards = (DATA.status || []).filter(
      (c) => f.version === "all" || String(c.model_version) === f.version);
    if (!cards.length) {
      host.appendChild(el("p", "no-data", "No status for the selected versions yet."));
    }
    cards.forEach((c) => {
      const status = String(c.status || "unknown");
      const card = el("div", "card status-card");
      card.dataset.status = status;
      card.dataset.version = String(c.model_version);
      const h = el("h3", "", "Version " + c.model_version);
      h.appendChild(el("span", "badge " + status, status));
      card.appendChild(h);
      card.appendChild(el("p", "", c.headline || ""));
      host.appendChild(card);
    });
  }

  // ---- CSV -------------------------------------------------------------------------------
  function toCsv(name) {
    const t = state.tables[name] || {columns: colsOf(name), rows: []};
    const esc = (v) => {
      if (v === null || v === undefined) return "";
      const s = typeof v === "object" ? JSON.stringify(v) : String(v);
      return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
    };
    const lines = [t.columns.map(esc).join(",")];
    t.rows.forEach((r) => lines.push(t.columns.map((c) => esc(r[c])).join(",")));
    return lines.join("\r\n") + "\r\n";
  }
  function downloadCsv(name) {
    const blob = new Blob([toCsv(name)], {type: "text/csv;charset=utf-8"});
    const url = URL.createObjectURL(blob);
    const a = el("a");
    a.href = url;
    a.download = name + ".csv";
    a.style.display = "none";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 2000);
  }

  // ---- views -----------------------------------------------------------------------------
  function renderView(view, f) { (RENDERERS[view] || (() => {}))(f || filters()); }
  function show(view) {
    if (!(view in RENDERERS)) return;
    state.view = view;
    document.querySelectorAll("section[data-view]").forEach((s) => {
      s.hidden = s.dataset.view !== view;
    });
    document.querySelectorAll("button[data-view-tab]").forEach((b) => {
      const active = b.dataset.viewTab === view;
      b.classList.toggle("active", active);
      b.setAttribute("aria-selected", active ? "true" : "false");
    });
    renderView(view);
    const section = document.querySelector('section[data-view="' + view + '"]');
    section.querySelectorAll(".js-plotly-plot").forEach((div) => {
      if (div.hidden || div.offsetParent === null) return;
      const done = Plotly.Plots.resize(div);
      if (done && typeof done.catch === "function") done.catch(() => {});
    });
  }
  function renderAll() {
    const f = filters();
    renderTables(f);
    renderExecutive(f);
    renderView(state.view, f);
  }

  document.querySelectorAll("button[data-view-tab]").forEach((b) => {
    b.addEventListener("click", () => show(b.dataset.viewTab));
  });
  ["filter-start", "filter-end", "filter-version", "filter-segment"].forEach((id) => {
    byId(id).addEventListener("change", renderAll);
  });
  byId("pm-signal").addEventListener("change", () => renderView("product-manager"));
  byId("errors-day").addEventListener("change", () => renderErrorsTable(filters()));
  document.addEventListener("click", (e) => {
    const target = e.target instanceof Element ? e.target.closest("button.csv") : null;
    if (target) downloadCsv(target.dataset.table);
  });
  renderTables(filters());
  renderExecutive(filters());
  show("executive");
  window.dashboard = {data: DATA, state: state, filters: filters, render: renderAll, show: show,
    csv: toCsv};
  document.body.dataset.ready = "true";
})();
"""

SIGNALS = [
    ("thumbs_up_share", "thumbs-up share"),
    ("mean_rating", "mean rating"),
    ("negative_feedback_share", "negative feedback share"),
    ("click_rate", "click rate"),
    ("conversion_rate", "conversion rate"),
    ("comment_sentiment", "comment sentiment"),
]


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _chart(chart_id: str, title: str, caption: str = "", wide: bool = False) -> str:
    cap = f'<p class="caption">{_e(caption)}</p>' if caption else ""
    cls = "card wide" if wide else "card"
    return (
        f'<div class="{cls}"><h3>{_e(title)}</h3>{cap}'
        f'<div class="chart" id="{chart_id}"></div>'
        f'<p class="no-data" id="{chart_id}-empty" hidden>No data for the current filters.</p>'
        "</div>"
    )


def _table(name: str, title: str, caption: str = "", extra: str = "", count: str = "") -> str:
    cap = f'<p class="caption">{_e(caption)}</p>' if caption else ""
    counter = f' <span id="{count}" class="caption"></span>' if count else ""
    return (
        f'<div class="card wide"><div class="table-head"><h3>{_e(title)}{counter}</h3>{extra}'
        f'<button type="button" class="csv" data-table="{name}">Download CSV</button></div>'
        f'{cap}<div class="table" id="table-{name}" data-rows="0"></div></div>'
    )


def _options(values: list[str], all_label: str) -> str:
    opts = [f'<option value="{ALL}" selected>{_e(all_label)}</option>']
    opts += [f'<option value="{_e(v)}">{_e(v)}</option>' for v in values]
    return "".join(opts)


def _headline(key: str, label: str) -> str:
    return (
        f'<div class="card headline" id="headline-{key}" data-trend="none">'
        f'<div class="label">{_e(label)}</div><div class="value">–</div>'
        '<div class="trend">no data in this period</div></div>'
    )


def _body(data: DashboardData, info: dict[str, Any]) -> str:
    first, last = info["first_day"] or "", info["last_day"] or ""
    bounds = f' min="{first}" max="{last}"' if first and last else ""
    active = ' class="active" aria-selected="true"'
    tabs = "".join(
        f'<button type="button" role="tab" data-view-tab="{v}"'
        f"{active if v == 'executive' else ''}>{VIEW_TITLES[v]}</button>"
        for v in VIEWS
    )
    signal_options = "".join(f'<option value="{k}">{_e(label)}</option>' for k, label in SIGNALS)
    executive = (
        '<section data-view="executive" id="view-executive">'
        "<h2>How the model is doing</h2>"
        '<p class="caption">Filtered period against the period of the same length just before '
        "it (the selected version, or all versions; the selected segment).</p>"
        '<div class="headlines">'
        + _headline("accuracy", "Accuracy")
        + _headline("thumbs", "Thumbs-up share")
        + _headline("value", "Business value")
        + _headline("alerts", "Alerts in period")
        + "</div><h2>Status per model version</h2>"
        '<div class="status-cards" id="status-cards"></div></section>'
    )
    scientist = (
        '<section data-view="data-scientist" id="view-data-scientist" hidden>'
        '<div class="grid">'
        + _chart(
            "chart-accuracy",
            "Accuracy over time",
            "Solid: realized on labeled rows; dashed: estimated. Open markers: provisional days.",
        )
        + _chart("chart-auc", "ROC AUC over time", "Solid: realized; dashed: estimated.")
        + _chart(
            "chart-segments",
            "Accuracy by segment",
            "Filtered period; the selected segment is highlighted.",
        )
        + _chart("chart-confusion", "Confusion matrix", "Summed over the filtered days.")
        + _chart("chart-calibration", "Calibration", "Observed rate against mean score per bin.")
        + _chart(
            "chart-importance", "Feature importance (champion)", "Permutation importance ± std."
        )
        + _chart("chart-drift", "Drift per feature", "Drift score by day and column.", wide=True)
        + _chart("chart-drift-share", "Share of drifted columns", wide=True)
        + "</div></section>"
    )
    engineer = (
        '<section data-view="ml-engineer" id="view-ml-engineer" hidden><div class="grid">'
        + _chart("chart-volume", "Predictions per day")
        + _chart("chart-latency", "Latency p50 / p95 / p99")
        + _chart("chart-quarantine", "Quarantined rows per day by reason", wide=True)
        + _table("checks", "Data-quality checks", "Failed checks first.")
        + _table("freshness", "Freshness")
        + _table("runs", "Pipeline runs")
        + _table("retrainings", "Retrainings")
        + "</div></section>"
    )
    product = (
        '<section data-view="product-manager" id="view-product-manager" hidden>'
        '<div class="grid">'
        '<div class="card wide"><label class="inline-label">Feedback signal '
        f'<select id="pm-signal">{signal_options}</select></label></div>'
        + _chart("chart-feedback", "Feedback per version", "Selected segment.")
        + _chart("chart-feedback-segments", "Feedback per segment", "Selected version or all.")
        + _table(
            "ab",
            "A/B comparison of versions",
            "Means over the filtered period and segment, every version, with counts.",
        )
        + _chart(
            "chart-corr",
            "Feedback vs metrics (rho, lag 0)",
            "Selected version and segment; 'n.s.': not significant after adjustment.",
        )
        + _chart("chart-scatter-thumbs", "Daily thumbs-up share vs accuracy")
        + _chart("chart-scatter-latency", "Daily click rate vs latency p95")
        + _table("correlations", "Correlations")
        + _table("by_correctness", "Feedback on correct vs wrong predictions")
        + _table("by_latency", "Feedback by latency bucket")
        + "</div></section>"
    )
    common = (
        '<section id="alerts" class="common"><div class="grid">'
        + _table("alerts", "Alerts", count="alerts-count")
        + '</div></section><section id="errors" class="common"><div class="grid">'
        + _table(
            "errors",
            "Most confident wrong predictions",
            "Features and feedback of the day's most confident wrong predictions.",
            extra='<label class="inline-label">Day <select id="errors-day"></select></label>',
        )
        + '</div></section><section id="links" class="common"><div class="grid">'
        + _table("links", "Reports and runs per day")
        + "</div></section>"
    )
    return (
        f"<header><h1>Model monitoring: {_e(data.model_name)}</h1>"
        f'<p class="meta">Generated {_e(data.generated_at)}</p>'
        f'<nav class="tabs" role="tablist">{tabs}</nav></header>'
        '<div class="filters" id="filters">'
        f'<label>From <input type="date" id="filter-start" value="{first}"{bounds}></label>'
        f'<label>To <input type="date" id="filter-end" value="{last}"{bounds}></label>'
        f'<label>Version <select id="filter-version">'
        f"{_options(info['versions'], 'all versions')}</select></label>"
        f'<label>Segment <select id="filter-segment">'
        f"{_options(info['segments'], 'all segments')}</select></label>"
        "</div><main>"
        '<noscript><p class="no-data">This page needs JavaScript for its charts.</p></noscript>'
        + executive
        + scientist
        + engineer
        + product
        + common
        + "</main>"
    )


def render_html(data: DashboardData) -> str:
    """The whole page as one string."""
    info = payload(data)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Monitoring: {_e(data.model_name)}</title>"
        '<link rel="icon" href="data:,">'
        f"<style>{_CSS}</style></head><body>"
        + _body(data, info)
        + '\n<script type="application/json" id="dashboard-data">'
        + _script_json(info)
        + "</script>\n<script>"
        + plotly.offline.get_plotlyjs()
        + '</script>\n<script id="dashboard-script">'
        + _SCRIPT
        + "</script>\n</body></html>\n"
    )


def render(data: DashboardData, path: str) -> str:
    """Write the dashboard page to ``path`` (creating its directory) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    storage.write_bytes(render_html(data).encode("utf-8"), str(target))
    return path


def write_tables(data: DashboardData, directory: str) -> list[str]:
    """Write every non-empty table (and the status cards) as ``NAME.csv`` under ``directory``."""
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    tables = dict(data.tables())
    if data.status:
        tables["status"] = pd.DataFrame(data.status)
    for name, df in tables.items():
        if df is None or df.empty:
            continue
        target = out_dir / f"{name}.csv"
        text = df.to_csv(index=any(n is not None for n in df.index.names))
        storage.write_bytes(text.encode("utf-8"), str(target))
        written.append(str(target))
    return written
