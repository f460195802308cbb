"""report.html: one self-contained page (no scripts, no fetched assets, the plot inline).

Everything the agent wrote (descriptions, hypotheses, diffs, crash reasons) is escaped: it is
untrusted text, and the page must render it, never run it.
"""

from __future__ import annotations

import base64
import math
import statistics
import time
from html import escape

from autoresearch.agent.usage import unanswered_note
from autoresearch.budget import dollars_of, unpriced_said
from autoresearch.delta_text import signed
from autoresearch.heartbeat import unlaunched_note
from autoresearch.report import CampaignReport, KeptChange
from autoresearch.report_text import tokens_said, total_said

# A word longer than the page (a path, a URL, a description without spaces) breaks where it must:
# else the agent's headings and the table's cells widen the page past its max-width.
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.2em; }
th, td { border-bottom: 1px solid #ddd; padding: .25em .8em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; font-size: 12px; }
.add { color: #1a7f37; } .del { color: #cf222e; } .hunk { color: #0550ae; }
.muted { color: #666; } h2 { margin-top: 1.6em; border-bottom: 1px solid #eee; }
h1, h3, p, td { overflow-wrap: anywhere; }
"""


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp)) if timestamp else "-"


def _table(header: list[str], body: list[list[str]], numeric: tuple[int, ...] = ()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    lines = [
        "<tr>"
        + "".join(f"<td{' class=num' if i in numeric else ''}>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in body
    ]
    return f"<table><tr>{head}</tr>{''.join(lines)}</table>"


def _mean(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.6f}" if values else "-"
    return f"{statistics.fmean(values):.6f} ± {statistics.stdev(values):.6f} ({len(values)} seeds)"


def _diff(text: str) -> str:
    styles = (("+++", ""), ("---", ""), ("+", "add"), ("-", "del"), ("@@", "hunk"))
    out = []
    for line in text.splitlines():
        css = next((c for prefix, c in styles if line.startswith(prefix)), "")
        out.append(f'<span class="{css}">{escape(line)}</span>' if css else escape(line))
    return "<pre>" + "\n".join(out) + "</pre>"


def _result(r: CampaignReport) -> str:
    if not r.tiers:  # (none finished yet, or those that did failed: then the Failures section shows them)
        failed = " (those that failed are under Failures)" if r.failure_reasons else ""
        return f"<p>No baseline has a result yet{failed}.</p>"
    body = []
    for t in r.tiers:
        frontier = _mean(t.frontier) + (f", trial {t.frontier_trial}" if t.frontier_trial is not None else "")
        change = signed(t.change)
        if math.isfinite(t.change):
            change += f" ({signed(100 * t.change / t.compared.baseline, 2)}%), {t.compared.over()}"
        body.append([escape(t.tier), _mean(t.baseline), frontier, change])
    legend = (
        "<p class=muted>val_bpb: validation bits per byte, lower is better; ± is the standard "
        "deviation over the seeds each was run on; the change compares the two on the seeds both "
        "ran, as the keep rule does, where they share any.</p>"
    )
    return _table(["tier", "baseline val_bpb", "frontier val_bpb", "change"], body, (3,)) + legend


def _pool_dollars(r: CampaignReport, pool: str) -> str:
    """A pool's dollars, each hour at its launch price; hours launched before prices were recorded
    on a pool config.yaml no longer names (a campaign resumed on other partitions) have no price to
    say, and $0.00 would read as free. Beside hours launched at a price, they are said apart, with
    the GPU types they ran on."""
    hours = r.pool_hours(pool)
    left = r.unpriced_hours.get(pool)
    if left and all(price is None for _, price in hours):
        return "? (no price: not a partition in config.yaml)"
    priced = f"${dollars_of(hours, r.prices):,.2f}"
    if not left:
        return priced
    return (
        f"{priced} + {escape(unpriced_said(left, r.hours_unit))} (no "
        "price: launched before prices were recorded, on a partition config.yaml no longer names)"
    )


def _cost(r: CampaignReport) -> str:
    body = [
        [
            f"{escape(pool)} ({escape(', '.join(r.gpu_types[pool]))})",
            f"{hours:.2f}",
            _pool_dollars(r, pool),
        ]
        for pool, hours in sorted(r.gpu_hours.items())
    ]
    llm = r.llm
    models = ", ".join(llm["models"]) or "none"
    body.append([f"LLM ({escape(models)})", escape(tokens_said(llm)), f"${llm['dollars']:,.2f}"])
    body.append(["<b>total</b>", "", f"<b>{escape(total_said(r))}</b>"])
    calls = f"{llm['calls']} API calls in {llm['waves']} waves, {llm['failed_calls']} failed{unanswered_note(llm)}"
    return (
        _table(["what", f"{r.hours_unit} / tokens", "dollars"], body, (1, 2)) + f"<p class=muted>{calls}.</p>"
    )


def _speedup(r: CampaignReport) -> str:
    s = r.speedup
    if not s.busy_hours:  # (nothing ran yet: no speed-up to say, where 0.0x would read as a loss)
        return "<p>No experiment has run yet.</p>"
    per_hour = r.ran / s.busy_hours
    slot = "one CPU slot" if r.hours_unit == "CPU-hours" else "one GPU"
    loop = (
        f"<p>Run one after another in a single slot ({slot}), these {r.ran} experiments need "
        f"<b>{s.sequential_hours:.2f} h</b> of run time alone (a lower bound: the agent's time between "
        f"runs is not counted). The campaign had experiments in flight for <b>{s.busy_hours:.2f} h</b>"
    )
    if s.factor >= 1:
        return loop + f": <b>{s.said()}</b>, {per_hour:.1f} experiments per hour.</p>"
    return loop + (
        f", longer: <b>{s.said()}</b> ({per_hour:.1f} experiments "
        "per hour). The wall time counts each experiment from its launch, the loop only its run: these "
        f"waited {s.waiting_hours:.2f} h in all between their launch and their start (a cluster's "
        "queue, a job's start-up), and too few ran at once to make up for it. A campaign of few "
        "experiments, or of jobs that wait long in a queue, can be slower than the loop; it gains as "
        "more run at once.</p>"
    )


def _kept(k: KeptChange) -> str:
    facts = [
        f"val_bpb {k.val_bpb:.6f}"
        + (f" ({signed(k.delta)} against the frontier)" if k.delta is not None else ""),
        f"frontier commit <code>{escape(k.commit)}</code>",
        f"proposed by {escape(k.source or '?')}",
    ]
    facts += [f"re-runs on other seeds on {escape(tier)}: {_mean(v)}" for tier, v in k.reruns.items()]
    if k.reason:
        facts.append(escape(k.reason))
    hypothesis = f"<p><i>{escape(k.hypothesis)}</i></p>" if k.hypothesis else ""
    return (
        f"<h3>trial {k.trial}: {escape(k.description)}</h3>{hypothesis}"
        f"<p class=muted>{'; '.join(facts)}</p>{_diff(k.diff) if k.diff else ''}"
    )


def render_html(r: CampaignReport, plot_png: bytes | None) -> str:
    state = (
        f"{r.running} running, {r.queued} queued" if r.running or r.queued else "nothing running or queued"
    )
    if r.queued:
        state += unlaunched_note(r.controller)
    if r.awaiting:
        state += f", {r.awaiting} ran and awaiting a decision"
    controller = f"Controller: {escape(r.controller)}." if r.controller else ""
    settings = _table(["setting", "value"], [[escape(k), escape(v)] for k, v in r.settings.items()])
    counts = ", ".join(f"{n} {escape(status)}" for status, n in sorted(r.counts.items()))
    plot = (
        f'<img alt="progress" style="max-width:100%" src="data:image/png;base64,'
        f'{base64.b64encode(plot_png).decode()}">'
        if plot_png
        else ""
    )
    reasons = _table(["reason", "runs"], [[escape(why), str(n)] for why, n in r.failure_reasons], (1,))
    kept = "".join(_kept(k) for k in r.kept) or "<p>Nothing kept yet.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>autoresearch: {escape(r.name)}</title>
<style>{STYLE}</style></head><body>
<h1>autoresearch campaign <code>{escape(r.name)}</code></h1>
<p class=muted>Started {_when(r.started_at)}; last result {_when(r.last_result_at)}; {state}.
{controller}
Written {_when(time.time())} from the study; <code>python -m autoresearch.report</code> writes it again.</p>
{settings}
<h2>Result</h2>{_result(r)}
<p>{sum(r.counts.values())} finished trials: {counts}.</p>
{plot}
<h2>Cost</h2>{_cost(r)}
<h2>Speed-up against a sequential loop</h2>{_speedup(r)}
<h2>Kept changes ({len(r.kept)})</h2>
<p class=muted>Each as it ran, against the frontier of its day; the lineage is in
<code>frontier/</code> (<code>git log -p</code>).</p>{kept}
{f"<h2>Failures</h2>{reasons}" if r.failure_reasons else ""}
</body></html>
"""
