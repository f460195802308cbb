"""Running the read-only inspection tools: small, bounded views of results, diffs, crash logs and
the lines of train.py a tight prompt did not show.

Everything is read from the campaign context and from files the engine wrote under
<campaign>/experiments/<number:05d>/; trial numbers are integers, so no path can leave that
folder. Each answer is cut to a few KB so a wave's prompt stays bounded.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from autoresearch.proposers.base import CampaignContext, ExperimentRecord
from autoresearch.workspace import experiment_dir

RESULT_CHARS = 4000
MAX_NUMBERS = 20


def clip_head(text: str, limit: int = RESULT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... [{len(text) - limit} more characters cut]"


def clip_tail(text: str, limit: int = RESULT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"[{len(text) - limit} earlier characters cut] ...\n" + text[-limit:]


def record_dict(r: ExperimentRecord) -> dict[str, Any]:
    return {
        "number": r.number,
        "status": r.status,
        "tier": r.tier,
        "val_bpb": r.val_bpb,
        "delta": r.delta,
        "description": r.description,
        "knobs": r.knobs,
        "reason": r.reason,
        "source": r.source,
    }


class Inspector:
    """Answers inspection tool calls; returns (text, is_error) so bad calls go back as errors."""

    def __init__(self, context: CampaignContext, campaign_dir: str | Path) -> None:
        self.context = context
        self.campaign_dir = Path(campaign_dir)
        self.by_number = {r.number: r for r in context.history}

    def run(self, name: str, args: dict[str, Any]) -> tuple[str, bool]:
        handler = getattr(self, f"tool_{name}", None)
        if handler is None:
            return clip_head(f"unknown tool {name!r}"), True
        try:
            return handler(**args)
        except (TypeError, ValueError, KeyError, ArithmeticError) as err:  # (the error may quote the input)
            return clip_head(f"bad arguments for {name}: {err}"), True

    def experiment_file(self, number: int, filename: str) -> Path:
        return experiment_dir(self.campaign_dir, number) / filename

    def tool_get_results(self, numbers: list[int]) -> tuple[str, bool]:
        numbers = [int(n) for n in numbers][:MAX_NUMBERS]
        found = [record_dict(self.by_number[n]) for n in numbers if n in self.by_number]
        missing = [n for n in numbers if n not in self.by_number]
        text = "\n".join(json.dumps(r, default=str) for r in found)
        if missing:
            text += f"\nno finished trial with number(s): {', '.join(map(str, missing))}"
        return clip_head(text.strip()), not found

    def tool_get_diff(self, number: int) -> tuple[str, bool]:
        path = self.experiment_file(number, "train.diff")
        if not path.is_file():
            return f"no diff stored for trial {number}", True
        text = path.read_text(encoding="utf-8", errors="replace")
        return clip_head(text) or f"trial {number} made no change to train.py", False

    def tool_get_log_tail(self, number: int) -> tuple[str, bool]:
        path = self.experiment_file(number, "run.log")
        if not path.is_file():
            return f"no run.log stored for trial {number}", True
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 4 * RESULT_CHARS))
            tail = f.read().decode("utf-8", errors="replace")
        return clip_tail(tail), False

    def tool_results_by_knob(self, knob: str) -> tuple[str, bool]:
        groups: dict[tuple[str, str], list[float]] = defaultdict(list)
        for r in self.context.history:
            if r.val_bpb is None or r.status == "crash" or knob not in r.knobs:
                continue
            groups[(r.tier, json.dumps(r.knobs[knob], default=str))].append(r.val_bpb)
        if not groups:
            return clip_head(f"no finished results record a value of {knob}"), True
        lines = [f"{'tier':<9} {knob + ' =':<24} {'n':>5} {'mean':>9} {'min':>9}"]
        ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], min(kv[1])))
        for (tier, level), vals in ordered[:40]:
            lines.append(
                f"{tier:<9} {level[:24]:<24} {len(vals):>5} {statistics.fmean(vals):>9.6f} {min(vals):>9.6f}"
            )
        if len(ordered) > 40:
            lines.append(f"... {len(ordered) - 40} more levels")
        return clip_head("\n".join(lines)), False

    def tool_get_train_py(self, first_line: int, last_line: int) -> tuple[str, bool]:
        """Whole lines, as many as RESULT_CHARS holds: a search text must quote them exactly."""
        lines = self.context.frontier_source.splitlines(keepends=True)
        first, last = int(first_line), min(int(last_line), len(lines))
        if not 1 <= first <= last:
            return f"train.py has lines 1 to {len(lines)}: ask for 1 <= first_line <= last_line", True
        shown: list[str] = []
        room = RESULT_CHARS - 200  # for the heading
        for line in lines[first - 1 : last]:
            if shown and len(line) > room:
                break
            shown.append(line)
            room -= len(line)
        end = first + len(shown) - 1
        heading = f"train.py lines {first}-{end} of {len(lines)}"
        if end < last:
            heading += f" (the answer is full: ask again from first_line={end + 1})"
        return clip_head(f"{heading}:\n{''.join(shown)}"), False
