"""The offline proposer: a seedable, network-free researcher for laptops, CI and API outages.

It hill-climbs from the frontier the way a careful person would without an LLM: one-factor moves
of each declared knob (halve / double, one step up / down), a small library of structural edits
to train.py, a 2x2 factorial grid over the two knobs whose moves paid off best, and free
candidates for the inner sampler (TPE) to fill. Everything it proposes is new on the current
frontier; after each keep it starts again around the new frontier.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from autoresearch.knobs import literal_knobs
from autoresearch.proposals import Candidate, Edit, Grid, Wave
from autoresearch.proposers.base import CampaignContext, ExperimentRecord, KnobSpec
from autoresearch.sampler import knob_value_problem


@dataclass(frozen=True)
class StructuralEdit:
    """A named change to train.py, proposed only where its search text occurs in the frontier."""

    description: str
    hypothesis: str
    search: str
    replace: str


# Edits written against trainer/train.py; one that no longer matches the frontier is simply skipped.
_RELU2 = "        return self.c_proj(F.relu(self.c_fc(x)).square())"
_MLP_4X = (
    "        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)\n"
    "        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)"
)
STRUCTURAL_EDITS: tuple[StructuralEdit, ...] = (
    StructuralEdit(
        "MLP activation: GELU instead of ReLU^2",
        "a smoother activation trains better in a short budget",
        _RELU2,
        "        return self.c_proj(F.gelu(self.c_fc(x)))",
    ),
    StructuralEdit(
        "MLP activation: SiLU instead of ReLU^2",
        "SiLU keeps gradient for negative inputs",
        _RELU2,
        "        return self.c_proj(F.silu(self.c_fc(x)))",
    ),
    StructuralEdit(
        "MLP hidden width 3x instead of 4x",
        "a narrower MLP trades capacity for more steps in the same time",
        _MLP_4X,
        _MLP_4X.replace("4 * config.n_embd", "3 * config.n_embd"),
    ),
    StructuralEdit(
        "value embeddings on every layer",
        "value embeddings help every layer, not only alternate ones",
        "    return layer % 2 == (n_layer - 1) % 2",
        "    return True",
    ),
    StructuralEdit(
        "stronger initial input-embedding mixing (x0 lambda 0.1 -> 0.3)",
        "more direct access to the token embedding helps a shallow model early on",
        "self.x0_lambdas = nn.Parameter(torch.full((L,), 0.1))",
        "self.x0_lambdas = nn.Parameter(torch.full((L,), 0.3))",
    ),
)


def _step(knob: KnobSpec, value: Any, direction: int) -> Any:
    """The next value of `knob` from `value` in `direction` (+1 / -1), inside its range; None at the edge."""
    if knob.kind == "categorical":
        choices = list(knob.choices)
        if value not in choices:
            return choices[0]
        i = choices.index(value) + direction
        return choices[i] if 0 <= i < len(choices) else None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if knob.kind == "int":
        new: float = (
            value * 2 if knob.log and direction > 0 else value // 2 if knob.log else value + direction
        )
        new = int(new)
    else:
        new = value * (2.0 if direction > 0 else 0.5)
        new = float(f"{new:.4g}")
    low = knob.low if knob.low is not None else new
    high = knob.high if knob.high is not None else new
    new = min(max(new, low), high)  # (a bound of the other type: 1 for a float knob, 256.0 for an int)
    new = int(new) if knob.kind == "int" else float(new)
    return None if new == value else new


class OfflineProposer:
    name = "offline"

    def __init__(self, seed: int = 0, edits: tuple[StructuralEdit, ...] = STRUCTURAL_EDITS) -> None:
        self.seed = seed
        self.edits = edits

    def propose(self, context: CampaignContext) -> Wave:
        rng = random.Random(f"{self.seed}:{len(context.history)}:{context.frontier_commit}")
        here = [r for r in context.history if r.parent == context.frontier_commit]
        tried = {json.dumps(r.knobs, sort_keys=True) for r in here}
        tried_descriptions = {r.description for r in here}

        moves = self._knob_moves(context, tried, rng)
        structural = [
            Candidate(e.description, e.hypothesis, [Edit(e.search, e.replace)])
            for e in self.edits
            if e.description not in tried_descriptions and context.frontier_source.count(e.search) == 1
        ]
        rng.shuffle(structural)

        wanted = max(1, context.wave_size)
        candidates: list[Candidate] = []
        while len(candidates) < wanted and (moves or structural):
            if moves:
                candidates.append(moves.pop(0))
            if structural and len(candidates) < wanted:
                candidates.append(structural.pop(0))
        grids = self._grid(context, here, tried)
        free = max(0, wanted - len(candidates) - sum(g.size() for g in grids))
        for _ in range(free):
            candidates.append(self._free_candidate(context, rng))
        return Wave(
            rationale=f"hill-climb from frontier {context.frontier_commit or '?'}: "
            f"{len(candidates)} candidates, {len(grids)} grid(s)",
            candidates=candidates,
            grids=grids,
            source=self.name,
        )

    def _knob_moves(self, context: CampaignContext, tried: set[str], rng: random.Random) -> list[Candidate]:
        moves = []
        knobs = list(context.knobs)
        rng.shuffle(knobs)
        for knob in knobs:
            current = context.knob_values.get(knob.name)
            for direction in (1, -1):
                value = _step(knob, current, direction)
                if value is None or json.dumps({knob.name: value}, sort_keys=True) in tried:
                    continue
                moves.append(
                    Candidate(
                        description=f"{knob.name} {current} -> {value}",
                        hypothesis=f"{knob.name} is not at its optimum for this scale and budget",
                        knobs={knob.name: value},
                    )
                )
        return moves

    def _grid(self, context: CampaignContext, here: list[ExperimentRecord], tried: set[str]) -> list[Grid]:
        """A 2x2 grid over the two knobs whose single moves paid off best on this frontier: each
        measured below the frontier, if not by enough to keep (two moves that made it worse
        would make a grid of one more loss and three repeats)."""
        frontier = context.frontier_val_bpb.get("screen")
        if frontier is None:
            return []
        specs = {k.name: k for k in context.knobs}
        literals = literal_knobs(context.frontier_source)
        best: dict[str, tuple[float, Any]] = {}
        for r in here:
            if len(r.knobs) == 1 and r.val_bpb is not None and r.val_bpb < frontier:
                ((name, value),) = r.knobs.items()
                if name not in literals or (
                    name in specs and knob_value_problem(specs[name], literals[name])
                ):
                    continue  # no cell to set it back to: its frontier value is an expression, or one intake refuses
                if name not in best or r.val_bpb < best[name][0]:
                    best[name] = (r.val_bpb, value)
        if len(best) < 2:
            return []
        (a, (_, va)), (b, (_, vb)) = sorted(best.items(), key=lambda kv: kv[1][0])[:2]
        factors = {a: [literals[a], va], b: [literals[b], vb]}
        cells = [{a: x, b: y} for x in factors[a] for y in factors[b]]
        if all(json.dumps(c, sort_keys=True) in tried for c in cells):
            return []
        return [Grid(f"interaction of {a} and {b}", factors, hypothesis="their gains may stack or interact")]

    def _free_candidate(self, context: CampaignContext, rng: random.Random) -> Candidate:
        names = [k.name for k in context.knobs]
        chosen = rng.sample(names, k=min(2, len(names))) if names else []
        return Candidate(
            description="inner sampler: " + ", ".join(chosen) if chosen else "baseline repeat",
            hypothesis="model-based search where the hill-climb has run out of obvious moves",
            knobs=dict.fromkeys(chosen),
        )
