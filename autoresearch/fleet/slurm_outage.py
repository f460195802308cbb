"""sbatch failing: a refusal (the job's to lose) or a controller out of reach (the jobs' to wait out).

A restart of slurmctld, or a site's maintenance window, makes every sbatch fail for minutes after
its own retries. Taking that for a refusal would lose (and re-queue) every experiment the
controller tries to send meanwhile, and spend the budget's launches on them; the fleet instead
holds them and tries again with back-off, saying so once.
"""

from __future__ import annotations

import logging
import time

from submitit.core.utils import FailedJobError

log = logging.getLogger("autoresearch")

SUBMIT_RETRY_SECONDS = (15.0, 30.0, 60.0, 120.0, 300.0)  # back-off while sbatch cannot reach Slurm
# sbatch's words for a controller it cannot reach, or one too busy to answer: passing, and no
# fault of the experiments, which wait for it (a restart of slurmctld takes minutes).
UNREACHABLE = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "temporarily unable",
    "Resource temporarily unavailable",
    "Zero Bytes were transmitted",
)


def unreachable(err: FailedJobError) -> bool:
    """Whether sbatch failed for want of Slurm's controller rather than refused the job."""
    return any(words in str(err) for words in UNREACHABLE)


def refusal(err: FailedJobError) -> str:
    """sbatch's refusal in one line (an account or QOS limit, a busy controller, no node left)."""
    said = next((line.strip() for line in str(err).splitlines() if line.strip()), "no reason given")
    if unreachable(err):
        return f"sbatch cannot reach Slurm's controller ({said})"
    return f"sbatch refused the job: {said}"


class SubmitOutage:
    """sbatch cannot reach Slurm's controller: when to try again (backing off), said once."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.failures = 0
        self.retry_at = 0.0

    def waiting(self) -> bool:
        return self.since is not None and time.monotonic() < self.retry_at

    def failed(self, reason: str) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
            log.warning(
                "%s; the experiments wait for it (not lost), and sbatch is tried again every %.0f s to %.0f min",
                reason, SUBMIT_RETRY_SECONDS[0], SUBMIT_RETRY_SECONDS[-1] / 60,
            )  # fmt: skip
        self.retry_at = now + SUBMIT_RETRY_SECONDS[min(self.failures, len(SUBMIT_RETRY_SECONDS) - 1)]
        self.failures += 1

    def over(self) -> None:
        if self.since is not None:
            log.info("sbatch reaches Slurm's controller again, after %.0f s", time.monotonic() - self.since)
        self.since, self.failures = None, 0
