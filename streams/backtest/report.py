"""How a backtest is shown: a rich table on the terminal, and an HTML report with embedded PNG
plots for analysts (alerts per detector, precision/recall per detector, alerts per day)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from streams.backtest import metrics
from streams.backtest.sources import show_time

if TYPE_CHECKING:
    from streams.backtest.run import BacktestResult


def _figures(r: Any) -> list[str]:
    """A detector's row of the comparison (candidate, and baseline where there is one): the
    terminal table and the HTML report show the same cells."""
    b = r.baseline
    return [
        r.detector_id,
        _pair(r.candidate.alerts, b.alerts if b else None),
        str(r.candidate.labels),
        _pair(r.candidate.precision, b.precision if b else None, _pct),
        _pair(r.candidate.recall, b.recall if b else None, _pct),
        _pair(r.candidate.f1, b.f1 if b else None, _pct),
        _pair(r.candidate.precision_at_k, b.precision_at_k if b else None, _pct),
    ]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def _pair(c: Any, b: Any, fmt: Any = str) -> str:
    return fmt(c) if b is None else f"{fmt(c)} / {fmt(b)}"


def _gained(gained: int, retriggered: int) -> str:
    return f"{gained} ({retriggered} re-triggered)" if retriggered else str(gained)


def comparison_table(result: BacktestResult) -> Table:
    """One row per detector: alerts, precision, recall, F1, P@k (candidate / baseline), gained
    and lost alert ids."""
    has_base = result.baseline_label is not None
    title = f"backtest {result.run_id}: {result.config_label}"
    if has_base:
        title += f" vs baseline {result.baseline_label}"
    t = Table(title=title, caption=_caption(result))
    t.add_column("detector")
    t.add_column("alerts", justify="right")
    t.add_column("labels", justify="right")
    for name in ("precision", "recall", "F1", "P@k"):
        t.add_column(name, justify="right")
    if has_base:
        t.add_column("gained", justify="right", style="green")
        t.add_column("lost", justify="right", style="red")
    for r in result.comparison:
        row = _figures(r)
        if has_base:
            row += [_gained(r.gained, r.retriggered), str(r.lost)]
        t.add_row(*row)
    tot = metrics.totals(result.comparison)
    row = [
        "all",
        _pair(tot.get("candidate_alerts", 0), tot.get("baseline_alerts") if has_base else None),
        str(tot.get("candidate_labels", 0)),
        _pair(tot["candidate_precision"], tot["baseline_precision"] if has_base else None, _pct),
        _pair(tot["candidate_recall"], tot["baseline_recall"] if has_base else None, _pct),
        "",
        "",
    ]
    if has_base:
        row += [_gained(tot.get("gained", 0), tot.get("retriggered", 0)), str(tot.get("lost", 0))]
    t.add_row(*row, style="bold")
    return t


def _caption(result: BacktestResult) -> str:
    s = result.stats
    pairs = "candidate / baseline; " if result.baseline_label else ""
    return (
        f"{pairs}{result.source} {show_time(result.from_ms)} → {show_time(result.to_ms)}: "
        f"{s.valid:,} events judged, {s.invalid_total:,} invalid skipped, "
        f"{result.labels:,} labels, {result.reviews:,} reviews; "
        f"{result.events_per_s:,.0f} events/s"
    )


# --- HTML ----------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(result: BacktestResult) -> dict[str, str]:
    """Title -> base64 PNG of each figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.comparison
    names = [r.detector_id for r in rows]
    has_base = result.baseline_label is not None
    out: dict[str, str] = {}
    h = max(3.0, 0.32 * len(names) + 1)

    fig, ax = plt.subplots(figsize=(8, h))
    y = range(len(names))
    if has_base:
        ax.barh([i + 0.2 for i in y], [r.baseline.alerts if r.baseline else 0 for r in rows],
                height=0.4, label=f"baseline {result.baseline_label}", color="#9aa5b1")  # fmt: skip
        ax.barh([i - 0.2 for i in y], [r.candidate.alerts for r in rows], height=0.4,
                label=f"candidate {result.config_label}", color="#d9480f")  # fmt: skip
    else:
        ax.barh(list(y), [r.candidate.alerts for r in rows], color="#d9480f",
                label=result.config_label)  # fmt: skip
    ax.set_yticks(list(y), names)
    ax.invert_yaxis()
    ax.set_xlabel("alerts")
    ax.legend(loc="lower right")
    out["Alerts per detector"] = _png(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, h), sharey=True)
    for ax, attr in zip(axes, ("precision", "recall"), strict=True):
        c = [getattr(r.candidate, attr) for r in rows]
        ax.barh([i - 0.2 for i in y], [v or 0 for v in c], height=0.4, color="#d9480f",
                label="candidate")  # fmt: skip
        if has_base:
            b = [getattr(r.baseline, attr) if r.baseline else None for r in rows]
            ax.barh([i + 0.2 for i in y], [v or 0 for v in b], height=0.4, color="#9aa5b1",
                    label="baseline")  # fmt: skip
        ax.set_xlim(0, 1.05)
        ax.set_title(attr)
        ax.set_yticks(list(y), names)
    axes[0].invert_yaxis()
    axes[1].legend(loc="lower right")
    out["Precision and recall per detector (– and 0 both show as an empty bar)"] = _png(fig)

    fig, ax = plt.subplots(figsize=(8, 3.2))
    for side, color in (("baseline", "#9aa5b1"), ("candidate", "#d9480f")):
        series = result.per_day.get(side)
        if series:
            ax.plot(list(series), list(series.values()), marker="o", color=color, label=side)
    ax.set_ylabel("alerts")
    ax.tick_params(axis="x", rotation=45)
    ax.legend()
    out["Alerts per day (local day of the triggering event)"] = _png(fig)
    return out


def write_html(result: BacktestResult, path: Path) -> Path:
    """A self-contained HTML report (plots embedded as PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    e = html.escape
    has_base = result.baseline_label is not None
    head = ["detector", "alerts", "labels", "precision", "recall", "F1", "P@k", "at risk (yuan)"]
    if has_base:
        head += ["gained", "lost"]
    body = []
    for r in result.comparison:
        cells = [*_figures(r), f"{r.candidate.amount_at_risk_fen / 100:,.0f}"]
        if has_base:
            cells += [_gained(r.gained, r.retriggered), str(r.lost)]
        body.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    figs = "".join(
        f'<h2>{e(title)}</h2><img alt="{e(title)}" src="data:image/png;base64,{png}">'
        for title, png in plots(result).items()
    )
    versus = f" vs baseline <b>{e(result.baseline_label)}</b>" if has_base else ""
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Backtest {e(result.run_id)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>Backtest {e(result.run_id)}</h1>
<p>Configuration <b>{e(result.config_label)}</b>{versus}; source {e(result.source)};
events from {e(show_time(result.from_ms))} to {e(show_time(result.to_ms))}.</p>
<p>{e(_caption(result))}</p>
<p>Cells read "candidate / baseline". Precision: alerts judged true among those judged
(an analyst's review, else the simulator's labels); recall: labels found; P@k: precision of the
k highest-scored alerts; gained/lost: alert ids only the candidate / only the baseline raised
("re-triggered": gained ids that are a lost finding raised at a later event of the same entity;
the alert id hashes the triggering event).</p>
<table><tr>{"".join(f"<th>{e(h)}</th>" for h in head)}</tr>{"".join(body)}</table>
{figs}
</body></html>
"""
    path.write_text(doc, encoding="utf-8")
    return path
