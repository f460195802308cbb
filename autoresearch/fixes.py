"""How many repairs of a crashed trial were proposed, and when one more is past the limit.

One count for two readers: the engine's intake, which refuses a fix past `agent.max_fix_attempts`,
and Claude's propose_wave tool (through `CampaignContext.fix_attempts`), which refuses it while
the agent can still put something else in the wave. Two copies of the rule would drift apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial


def fix_attempts(trials: Iterable[FrozenTrial]) -> Counter[int]:
    """Crashed trial number -> repairs of it proposed so far, run or refused. A retry of a fix
    lost to the cluster keeps its `fix_of` (it stands for that run): one attempt, not two."""
    return Counter(
        int(t.user_attrs["fix_of"])
        for t in trials
        if t.user_attrs.get("fix_of") is not None and "retry_of" not in t.user_attrs
    )


@dataclass
class WaveRepairs:
    """A wave's repairs, taken in order as the intake queues them: each is held to the limit with
    those `before` the wave (`fix_attempts`) and those earlier in it, counted as they come."""

    before: Mapping[int, int]
    in_wave: Counter[int] = field(default_factory=Counter)

    def past_limit(self, crashed: int, limit: int) -> str:
        """Why one more repair of trial `crashed` is refused, or ''."""
        attempts, earlier = self.before.get(crashed, 0), self.in_wave[crashed]
        if attempts + earlier < limit:
            return ""
        said = f", and this wave repairs it {earlier} time(s) before" if earlier else ""
        return f"trial {crashed} already had {attempts} fix attempts{said} (limit {limit})"

    def taken(self, crashed: int) -> None:
        """One more repair of `crashed` in this wave: an attempt, queued or refused."""
        self.in_wave[crashed] += 1
