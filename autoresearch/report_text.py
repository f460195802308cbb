"""The report's headline in plain text: what a campaign cost and how much faster than a sequential
loop it ran, as lines for a terminal (a cluster over SSH, where report.html is a copy away). The
controller ends with them and `autoresearch report` prints them; the figures and words are
report.html's, which shares the phrases below."""

from __future__ import annotations

from typing import Any

from autoresearch.agent.usage import unanswered_note
from autoresearch.budget import across_pools, unpriced_said
from autoresearch.report import CampaignReport


def tokens_said(llm: dict[str, Any]) -> str:
    """The LLM's tokens by kind (`usage_totals`)."""
    return (
        f"{llm['input_tokens']:,} input, {llm['output_tokens']:,} output, "
        f"{llm['cache_read_input_tokens']:,} read from and {llm['cache_creation_input_tokens']:,} "
        f"written to the prompt cache"
    )


def unpriced_more(r: CampaignReport) -> str:
    """What a dollar sum leaves out: hours with no price to count, said as hours (empty: none)."""
    left = across_pools(r.unpriced_hours)
    return f" + {unpriced_said(left, r.hours_unit)}" if left else ""


def total_said(r: CampaignReport) -> str:
    """Slot-hours and the LLM together, in dollars, with the hours that have no price said apart."""
    return f"${r.gpu_dollars + r.llm['dollars']:,.2f}{unpriced_more(r)}"


def llm_ran(r: CampaignReport) -> bool:
    """Whether an LLM agent was asked anything (its usage ledger holds a call, answered or not)."""
    return bool(r.llm["models"])


def not_yet(r: CampaignReport) -> str:
    """Why there are no hours to say: nothing has run, or what runs has not ended (a stop's
    closing lines, with runs in flight that go on: "no experiment has run yet" read as none)."""
    if r.running:
        return f"no experiment has ended yet ({r.running} in flight)"
    return "no experiment has run yet"


def cost_line(r: CampaignReport) -> str:
    """Hours (dollars where a price was set or some hours have none), the LLM's tokens and dollars
    where an agent ran, and the sum of both where both cost something."""
    hours = sum(r.gpu_hours.values())
    priced = r.gpu_dollars > 0 or bool(r.unpriced_hours)
    slots = f"{hours:.2f} {r.hours_unit}" + (f" (${r.gpu_dollars:,.2f}{unpriced_more(r)})" if priced else "")
    if not r.gpu_hours:  # (0.00 GPU-hours would name slots not known yet: a CPU campaign's, say)
        slots = not_yet(r)
    if not llm_ran(r):
        return f"cost: {slots}"
    dollars = f"${r.llm['dollars']:,.2f}{unanswered_note(r.llm)}"  # (a worst case where calls are cut off)
    llm = f"LLM ({', '.join(r.llm['models'])}) {tokens_said(r.llm)} ({dollars})"
    return f"cost: {slots}; {llm}" + (f"; {total_said(r)} in all" if priced else "")


def speedup_line(r: CampaignReport) -> str:
    """The speed-up as report.html says it, with the hours it is the ratio of."""
    s = r.speedup
    if not s.busy_hours:
        return f"speed-up: none to say, {not_yet(r)}"
    line = (
        f"{r.ran} experiment{'' if r.ran == 1 else 's'} in flight for {s.busy_hours:.2f} h, against {s.sequential_hours:.2f} h of "
        f"run time one after another in one slot (a sequential loop): {s.said()}"
    )
    if s.factor < 1:
        line += f"; they waited {s.waiting_hours:.2f} h between launch and start (report.html says more)"
    return line


def headline(r: CampaignReport) -> list[str]:
    return [cost_line(r), speedup_line(r)]
