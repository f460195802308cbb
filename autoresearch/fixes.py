"""How many repairs of a crashed trial were proposed, and when one more is past the limit.

One count for two readers: the engine's intake, which refuses a fix past `agent.max_fix_attempts`,
and Claude's propose_wave tool (through `CampaignContext.fix_attempts`), which refuses it while
the agent can still put something else in the wave. Two copies of the rule would drift apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from optuna.trial import FrozenTrial


def fix_attempts(trials: Iterable[FrozenTrial]) -> Counter[int]:
    """Crashed trial number -> repairs of it proposed so far, run or refused. A retry of a fix
    lost to the cluster keeps its `fix_of` (it stands for that run): one attempt, not two."""
    return Counter(
        int(t.user_attrs["fix_of"])
        for t in trials
        if t.user_attrs.get("fix_of") is not None and "retry_of" not in t.user_attrs
    )


def fix_limit_problem(crashed: int, attempts: int, limit: int, in_wave: int = 0) -> str:
    """Why one more repair of trial `crashed` is refused, or '': `attempts` proposed before this
    wave, `in_wave` earlier in it (the intake queues a wave's candidates in order)."""
    if attempts + in_wave < limit:
        return ""
    earlier = f", and this wave repairs it {in_wave} time(s) before" if in_wave else ""
    return f"trial {crashed} already had {attempts} fix attempts{earlier} (limit {limit})"
