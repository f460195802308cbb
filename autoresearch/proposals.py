"""What a proposer hands the engine: candidates, factorial grids, and the waves that carry them.

Plain dataclasses so every proposer (offline, Claude, a test script) speaks the same language and
a wave round-trips through JSON (the agent's tool input, the study's user attrs).
"""

from __future__ import annotations

import itertools
import json
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

KnobValue = int | float | str | bool | None
"""A knob setting. None means "free": the engine's inner Optuna sampler picks the value."""

TIERS = ("screen", "validate")


@dataclass(frozen=True)
class Edit:
    """An exact search/replace block: `search` must occur exactly once in `path`.

    `path` exists so a proposal that names another file can be refused with a reason;
    the only file an edit may change is train.py.
    """

    search: str
    replace: str
    path: str = "train.py"


@dataclass
class Candidate:
    """One experiment as a proposer sees it."""

    description: str
    hypothesis: str = ""
    edits: list[Edit] = field(default_factory=list)
    knobs: dict[str, KnobValue] = field(default_factory=dict)
    tier: str = "screen"
    fix_of: int | None = None  # trial number of a crashed experiment this candidate repairs

    def key(self) -> str:
        """Identity for de-duplication: same edits and same knob settings mean the same experiment."""
        edits = [[e.path, e.search, e.replace] for e in self.edits]
        return json.dumps({"edits": edits, "knobs": self.knobs}, sort_keys=True, default=str)


@dataclass
class Grid:
    """A factorial design: every combination of the factors' levels, on top of shared edits."""

    description: str
    factors: dict[str, list[KnobValue]]
    hypothesis: str = ""
    shared_edits: list[Edit] = field(default_factory=list)
    tier: str = "screen"

    def size(self) -> int:
        n = 1
        for levels in self.factors.values():
            n *= len(levels)
        return n

    def cell_description(self, knobs: dict[str, KnobValue]) -> str:
        """The description of the cell of these settings: the grid's, then the settings."""
        return f"{self.description} [{', '.join(f'{k}={v}' for k, v in knobs.items())}]"

    def longest_cell_description(self) -> int:
        """The length of its longest cell's description, found without building the cells."""
        longest = {name: max(levels, key=lambda v: len(str(v))) for name, levels in self.factors.items()}
        return len(self.cell_description(longest))

    def expand(self) -> Iterator[Candidate]:
        """All level combinations, in a stable order, each described by its settings. Lazily: a
        grid's size is a product, and only the first cells up to a wave's cap are ever needed."""
        names = list(self.factors)
        for values in itertools.product(*(self.factors[n] for n in names)):
            knobs = dict(zip(names, values, strict=True))
            yield Candidate(
                description=self.cell_description(knobs),
                hypothesis=self.hypothesis,
                edits=list(self.shared_edits),
                knobs=knobs,
                tier=self.tier,
            )


@dataclass
class Wave:
    """A proposer's answer to one request: a rationale, candidates and grids."""

    rationale: str = ""
    candidates: list[Candidate] = field(default_factory=list)
    grids: list[Grid] = field(default_factory=list)
    source: str = "offline"

    def size(self) -> int:
        """Experiments in the wave: its candidates and every cell of its grids."""
        return len(self.candidates) + sum(g.size() for g in self.grids)

    def expand(
        self, seen: set[str], cap: int, key: Callable[[Candidate], str] = Candidate.key
    ) -> tuple[list[Candidate], list[str]]:
        """Candidates then grid cells, de-duplicated by `key` against `seen` (updated) and capped.

        Returns the accepted candidates and a note for each duplicate dropped, and one for all
        those past the cap, so the proposer learns why.
        """
        accepted: list[Candidate] = []
        dropped: list[str] = []
        cells = itertools.chain(self.candidates, *(g.expand() for g in self.grids))
        for looked_at, cand in enumerate(cells):
            if len(accepted) >= cap:
                rest = self.size() - looked_at - 1
                more = f" and {rest} more" if rest else ""
                dropped.append(f"over the wave cap of {cap}: {cand.description}{more}")
                break
            key_ = key(cand)
            sampled = any(v is None for v in cand.knobs.values())  # a fresh draw each time: never a duplicate
            if key_ in seen and not sampled:
                dropped.append(f"duplicate of an earlier experiment: {cand.description}")
            else:
                seen.add(key_)
                accepted.append(cand)
        return accepted, dropped


def quoted(value: Any, limit: int = 60) -> str:
    """`value`'s repr for a reason to quote, cut after `limit` characters with its whole length
    said: what a proposer wrote can be a whole file, and a reason is one line of the log,
    results.tsv, W&B and the next prompt (the candidate itself is kept whole under proposals/)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def plain_line(text: str) -> str:
    """`text` with each control character (NUL, newline, tab, ...) made a space: a description goes
    where one line of text must (a git commit message, which cannot hold a NUL; results.tsv)."""
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)


def edit_from_dict(d: dict[str, Any]) -> Edit:
    return Edit(search=str(d["search"]), replace=str(d["replace"]), path=str(d.get("path", "train.py")))


def candidate_from_dict(d: dict[str, Any]) -> Candidate:
    tier = d.get("tier", "screen")
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r} (expected one of {', '.join(TIERS)})")
    return Candidate(
        description=str(d["description"]),
        hypothesis=str(d.get("hypothesis", "")),
        edits=[edit_from_dict(e) for e in d.get("edits", [])],
        knobs=dict(d.get("knobs", {})),
        tier=tier,
        fix_of=int(d["fix_of"]) if d.get("fix_of") is not None else None,
    )


def grid_from_dict(d: dict[str, Any]) -> Grid:
    tier = d.get("tier", "screen")
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r} (expected one of {', '.join(TIERS)})")
    factors = {str(k): list(v) for k, v in dict(d["factors"]).items()}
    if not factors or any(not levels for levels in factors.values()):
        raise ValueError("a grid needs at least one factor, each with at least one level")
    return Grid(
        description=str(d["description"]),
        factors=factors,
        hypothesis=str(d.get("hypothesis", "")),
        shared_edits=[edit_from_dict(e) for e in d.get("shared_edits", [])],
        tier=tier,
    )


def wave_from_dict(d: dict[str, Any], source: str) -> Wave:
    return Wave(
        rationale=str(d.get("rationale", "")),
        candidates=[candidate_from_dict(c) for c in d.get("candidates", [])],
        grids=[grid_from_dict(g) for g in d.get("grids", [])],
        source=source,
    )


def candidate_to_dict(c: Candidate) -> dict[str, Any]:
    return asdict(c)
