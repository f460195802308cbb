"""sbatch failing: a refusal (the job's to lose), or a controller out of reach, a partition
closed for maintenance or a cap on submitted jobs reached (the jobs' to wait out).

A restart of slurmctld, or a site's maintenance window, makes every sbatch fail for minutes after
its own retries. Taking that for a refusal would lose (and re-queue) every experiment the
controller tries to send meanwhile, and spend the budget's launches on them; the fleet instead
holds them and tries again with back-off, saying so once.
"""

from __future__ import annotations

import logging
import time

from submitit.core.utils import FailedJobError, FailedSubmissionError

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


# sbatch's words for a partition an administrator set INACTIVE or DRAIN (maintenance, an
# upgrade): it takes no new jobs for now, and taking each refusal for a lost run would spend every
# experiment's retries in seconds.
PARTITION_CLOSED = ("Required partition not available",)


# sbatch's words for a QOS or association cap on the jobs a user may have submitted
# (MaxSubmitJobsPerUser, MaxSubmitJobs, GrpSubmitJobs; each array task counts): it passes as
# jobs end, so the experiments wait for room rather than being lost, refused again, while it holds.
SUBMIT_LIMIT = ("MaxSubmitJob", "GrpSubmitJob", "job submit limit")


# How sbatch can fail: its refusal or error (FailedJobError), output submitit cannot read
# (FailedSubmissionError), or no sbatch to run (OSError).
SUBMIT_ERRORS = (FailedJobError, FailedSubmissionError, OSError)


def unreachable(err: Exception) -> bool:
    """Whether sbatch failed for want of Slurm's controller rather than refused the job."""
    return any(words in str(err) for words in UNREACHABLE)


def partition_closed(err: Exception) -> bool:
    """Whether sbatch refused because the partition takes no new jobs for now (inactive, drain)."""
    return any(words in str(err) for words in PARTITION_CLOSED)


def submit_limit(err: Exception) -> bool:
    """Whether sbatch refused because the user has as many jobs submitted as a QOS or account allows."""
    return any(words in str(err) for words in SUBMIT_LIMIT)


def refusal(err: Exception) -> str:
    """sbatch's refusal in one line (an account or QOS limit, a busy controller, no node left)."""
    said = next((line.strip() for line in str(err).splitlines() if line.strip()), "no reason given")
    if unreachable(err):
        return f"sbatch cannot reach Slurm's controller ({said})"
    if not isinstance(err, FailedJobError):  # sbatch missing, or its answer unreadable
        return f"sbatch failed: {said}"
    return f"sbatch refused the job: {said}"


class Backoff:
    """sbatch failing again and again: when to try again, backing off, so a failure that lasts
    costs one sbatch every few minutes rather than one per poll."""

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
            self.said(reason)
        self.retry_at = now + SUBMIT_RETRY_SECONDS[min(self.failures, len(SUBMIT_RETRY_SECONDS) - 1)]
        self.failures += 1

    def over(self) -> None:
        if self.since is not None:
            self.said_over(time.monotonic() - self.since)
        self.since, self.failures = None, 0

    def said(self, reason: str) -> None:
        """Said once, at the first failure of a run of them."""

    def said_over(self, seconds: float) -> None:
        """Said when sbatch succeeds after failing."""


class SubmitOutage(Backoff):
    """sbatch cannot reach Slurm's controller: when to try again (backing off), said once."""

    def said(self, reason: str) -> None:
        log.warning(
            "%s; the experiments wait for it (not lost), and sbatch is tried again every %.0f s to %.0f min",
            reason, SUBMIT_RETRY_SECONDS[0], SUBMIT_RETRY_SECONDS[-1] / 60,
        )  # fmt: skip

    def said_over(self, seconds: float) -> None:
        log.info("sbatch reaches Slurm's controller again, after %.0f s", seconds)


class PoolBackoff(Backoff):
    """sbatch failing for one partition: said once, with what its experiments do meanwhile."""

    meanwhile = ""

    def __init__(self, pool: str) -> None:
        super().__init__()
        self.pool = pool

    def said(self, reason: str) -> None:
        log.warning(
            "partition %s: %s%s, and sbatch is tried again every %.0f s to %.0f min",
            self.pool, reason, self.meanwhile, SUBMIT_RETRY_SECONDS[0], SUBMIT_RETRY_SECONDS[-1] / 60,
        )  # fmt: skip


class PartitionClosed(PoolBackoff):
    """sbatch refuses every job of a partition set INACTIVE or DRAIN: its experiments wait (not
    lost), and sbatch is tried again, backing off, said once per closure."""

    meanwhile = "; it takes no new jobs (inactive or drained), so its experiments wait for it (not lost)"

    def said_over(self, seconds: float) -> None:
        log.info("partition %s takes jobs again, after %.0f s", self.pool, seconds)


class SubmitLimitReached(PoolBackoff):
    """sbatch refuses a partition's jobs for a cap on the jobs a user may have submitted: its
    experiments wait for room (not lost), sbatch is tried again, backing off, and the first time
    the fleet says how to stay under the cap."""

    meanwhile = "; a cap on the jobs you may have submitted, so its experiments wait for room (not lost)"

    def __init__(self, pool: str) -> None:
        super().__init__(pool)
        self.advised = False
        # The most array tasks that last went through under the cap (0: a round sent none), and
        # the refusal that found it: a later round starts from there rather than its whole size.
        self.fit: int | None = None
        self.refused: Exception | None = None

    def sizes(self, wanted: int) -> list[int]:
        """The array sizes to try, largest first, for `wanted` tasks. Before the cap is met: halving
        down to one (log2 n + 1 sbatch calls at most). After: twice what last went through (room
        opens as jobs end), that, then one, so a round under a steady cap costs one or two calls;
        after a round that sent nothing, one task only, so each retry while the cap stays full
        costs one call (and what goes through doubles from there as room opens)."""
        if self.fit is None:
            return [wanted >> i for i in range(wanted.bit_length())]
        if self.fit == 0:
            return [1]
        return sorted({min(wanted, 2 * self.fit), min(wanted, self.fit), 1}, reverse=True)

    def none_went(self, refused: Exception) -> None:
        """sbatch refused even one task for the cap: no room left now."""
        self.fit, self.refused = 0, refused

    def went_through(self, size: int, wanted: int, refused: Exception | None) -> Exception | None:
        """Remember an array of `size` of `wanted` tasks sbatch took (`refused`: the cap's refusal
        of a larger one in the same round); the refusal that holds back the rest, None when all
        went out."""
        if refused is not None or size < wanted:
            self.fit, self.refused = size, refused or self.refused
        elif self.fit is not None:
            self.fit = max(self.fit, size)
        return self.refused if size < wanted else None

    def said(self, reason: str) -> None:
        super().said(reason)
        if not self.advised:
            self.advised = True
            log.warning(
                "partition %s: set cluster.partitions.%s.slots (or cluster.max_queued) below that "
                "cap (sacctmgr show qos, sacctmgr show assoc: MaxSubmitJobs) so the fleet stays under it",
                self.pool, self.pool,
            )  # fmt: skip

    def sent_part(self, reason: str) -> None:
        """sbatch took part of a round (a smaller array) and refused the rest for the cap: the rest
        waits, said once like a refusal, and is tried again at the shortest interval, not backed
        off: room opens as each job ends."""
        self.failed(reason)
        self.failures = 1
        self.retry_at = time.monotonic() + SUBMIT_RETRY_SECONDS[0]

    def said_over(self, seconds: float) -> None:
        log.info("partition %s takes jobs again under the submit cap, after %.0f s", self.pool, seconds)
