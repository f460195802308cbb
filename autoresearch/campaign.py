"""The campaign loop: propose, queue, launch, collect, decide; until a budget ends it.

Everything the loop knows is read back from the study, so a controller killed at any point and
started again with the same command carries on: queued proposals are WAITING trials, launched
experiments are RUNNING trials with a job handle, and decisions are made once, before `tell`.
The loop never sleeps or reads a wall clock itself: the fleet waits and the clock tells the time,
so the simulator can drive this same code on a virtual clock.

The loop drives four parts, a module each: the ledger (the study's trials, claims and tells), the
intake (what enters the queue), the launcher (what fills a free slot) and the decisions (keep or
discard). This module holds the loop, resuming, collecting results and what proposers see.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import statistics
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from autoresearch import budget as budgets
from autoresearch.config import (
    SAVED_CONFIG,
    AutoresearchConfig,
    backstop_grace,
    deadline_seconds,
    measurement,
    time_budget_seconds,
)
from autoresearch.decisions import Decisions
from autoresearch.eta import record_slots
from autoresearch.files import (
    dead_writers_temporaries,
    finite_number,
    write_atomic,
    write_failure,
)
from autoresearch.fixes import fix_attempts
from autoresearch.fleet.base import Finished, Fleet, JobSpec
from autoresearch.folder_lock import FolderLocked, LockUnusable, take_lock
from autoresearch.frontier import GIT_LOCKS, Frontier
from autoresearch.heartbeat import RAN_BEFORE, Heartbeat
from autoresearch.intake import NOT_RUN, Intake, confirm_tier
from autoresearch.knobs import read_knobs
from autoresearch.launcher import Launcher, data_step
from autoresearch.ledger import Ledger
from autoresearch.logs import log_to_file
from autoresearch.open_checks import MEASUREMENT_ATTR, study_refusal
from autoresearch.outage import StoppedInOutage
from autoresearch.plot import plot_progress
from autoresearch.policy import NoiseAwarePolicy, Policy
from autoresearch.proposers.base import CampaignContext, ExperimentRecord, KeepRule, Proposer
from autoresearch.pump import BackgroundPump, SyncPump
from autoresearch.report import REPORT_FILE, write_report
from autoresearch.report_text import headline
from autoresearch.results import Comparison, compare, write_results
from autoresearch.resume_changes import resuming_said, setting_changes, tracking_move
from autoresearch.runner import INFRA_STATUSES, ended_outcome, started_at
from autoresearch.sampler import AgentSampler, knob_specs
from autoresearch.starting_files import own_harness, train_py_change
from autoresearch.study import StudyUnavailable, finished, held_storage, open_study, status_of, trials
from autoresearch.temporaries import TemporarySweep, remove_temporaries
from autoresearch.tracking import NoTracker, Tracker
from autoresearch.workspace import experiment_dir

log = logging.getLogger("autoresearch")

RECORD_STATUS = {TrialState.FAIL: "crash", TrialState.RUNNING: "running", TrialState.WAITING: "queued"}
MAX_REJECTIONS_SHOWN = 20
MAX_EMPTY_WAVES = 3
# the campaign's subfolders (besides experiments/) whose files are replaced whole (`files.replacing`)
FOLDERS_OF_WHOLE_FILES = ("proposals", "harness", "agent/prompts", "agent/waves")
# A data step told to stop (SIGTERM) ends within a second; one whose main thread is stuck in a long
# native call would hold the controller's exit for ever, so it is killed after this long.
DATA_STEP_TERM_S = 10.0


def folder_gone(exp_dir: Path) -> dict[str, str]:
    """The outcome of a trial whose experiment folder was deleted by hand: no run can end in it."""
    return {"status": "lost", "reason": f"its experiment folder {exp_dir} is gone (deleted?)"}


class Clock(Protocol):
    def now(self) -> float: ...


class WallClock:
    def now(self) -> float:
        import time

        return time.time()


class CampaignError(RuntimeError):
    """A campaign that cannot start or go on; the message says why in one line."""


def disk_refusal(
    finished_now: list[Finished], campaign_dir: Path, refused_before: Callable[[int], int]
) -> str:
    """Why the campaign stops, where the disk of a run's folder refused train.py's writes (its
    runner's `disk_full`), else '': a full disk is the infrastructure's failure, as a write of the
    controller's own into the campaign folder that is refused (exit 2, the same command goes on
    once there is room); every run launched after it would be lost the same way. The run itself
    is re-queued at no cost (`_fail_and_requeue`). Only runs collected by this controller's loop
    stop it: one an earlier controller left, collected at a resume once space was freed, is
    re-queued alone. Nor does a refusal that costs a retry (`free_disk_refusal`: its own writes
    are taken for the cause, and a stop would only bring it back)."""
    for done in finished_now:
        if free_disk_refusal(done.outcome, refused_before(done.trial)):
            return (
                f"trial {done.trial} could not write in {experiment_dir(campaign_dir, done.trial)}: "
                f"{done.outcome.get('reason', 'its disk is full')}; free space there (or make it "
                "writable), then run the same command again: the run is queued again, at no cost"
            )
    return ""


def free_disk_refusal(outcome: dict[str, Any], refused_before: int) -> bool:
    """Whether `outcome` is a disk refusal that costs its experiment no retry and stops the
    campaign: its first refusal of train.py's writes (`refused_before` counts the earlier ones), or
    any refusal of the runner's own files (`runner_files`: started.json, outcome.json), which
    train.py's writes cannot have caused. A second refusal of train.py's writes is taken for its
    own (a quota the change's writes pass, which statvfs cannot show)."""
    if not outcome.get("disk_full"):
        return False
    return bool(outcome.get("runner_files")) or not refused_before


class CampaignLocked(CampaignError):
    """Another controller is running this campaign."""


@dataclass
class Summary:
    experiments: int
    kept: int
    crashed: int
    compared: Comparison | None  # the start and the frontier over the same seeds (`results.compare`)
    stop_reason: str
    kept_descriptions: list[str] = field(default_factory=list)
    set_up: bool = True  # False: stopped while it set up (the data), so it wrote no report
    headline: list[str] = field(default_factory=list)  # the report's cost and speed-up (`report_text`)
    running: int = 0  # experiments launched and not ended at the stop: they go on, the next run collects them
    # experiments ended by a person or the cluster (scancel, preemption), by status: counted, not run
    not_run: dict[str, int] = field(default_factory=dict)


def not_run_counts(done: list[FrozenTrial]) -> dict[str, int]:
    """The launched experiments a person or the cluster ended, per status (NOT_RUN's order): the
    closing line counts them among the experiments, so it says them apart from those that ran."""
    statuses = Counter(t.user_attrs.get("status") for t in done if "exp_dir" in t.user_attrs)
    return {status: statuses[status] for status in NOT_RUN if statuses[status]}


def figure(metrics: dict[str, Any], key: str) -> int | float | None:
    """A figure of train.py's result as it gave it, or None where it is not a finite number: the
    result is the untrusted code's, and one odd figure must cost the run that figure, never the
    controller (nor every resume, which reads the result again)."""
    value = metrics.get(key)
    return value if finite_number(value) else None


class Campaign:
    """The loop, and the parts it drives once the study is open (`open`): the ledger (the study's
    trials), the intake (the queue), the launcher (free slots) and the decisions (keep or discard)."""

    def __init__(
        self,
        cfg: AutoresearchConfig,
        campaign_dir: Path,
        fleet: Fleet,
        proposer: Proposer,
        clock: Clock | None = None,
        policy: Policy | None = None,
        background_proposals: bool = True,
        tracker: Tracker | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.log_file = log_file  # the log's file once this controller holds the folder (None: none)
        self.c = cfg.campaign
        self.dir = campaign_dir
        self.fleet = fleet
        self.proposer = proposer
        self.clock = clock or WallClock()
        self.policy = policy or NoiseAwarePolicy(self.c.min_delta, self.c.promote_z, self.c.keep_z)
        self.tracker = tracker or NoTracker()
        self.pump = BackgroundPump(proposer) if background_proposals else SyncPump(proposer)
        self.knobs = knob_specs(cfg)
        self.sampler = AgentSampler(self.knobs, seed=self.c.seed)
        self.stop_requested = False
        self.stopped_by = "the user"  # or the time limit of the controller's Slurm job (its USR1)
        self._writing_stop_files = False  # a second stop waits for the block to end (`leave_now`)
        self._stop_held = False  # one came meanwhile
        self._leaving = False  # a second stop raised KeyboardInterrupt: a third is no news
        self._database_lost = False  # it stopped as the study's database failed: the stop reads none
        self._lock_fd: int | None = None
        self.heartbeat = Heartbeat(campaign_dir)  # started once this controller holds the lock
        self._ran_before = 0.0  # seconds earlier controllers ran, as the wall budget counts them
        self._counting_since: float | None = None  # by `clock`: when this one's began to count
        self._baseline_measured: set[str] = set()  # tiers where a baseline has succeeded: sound there
        self._records: dict[int, ExperimentRecord] = {}  # of finished trials, which no longer change
        self._told = 0  # results told by this controller (see _after_tell)
        self._ended = 0  # experiments this controller saw end, run or lost (see _finish)
        self._ended_at_ask = -1  # `_ended` when the proposer was last asked for a wave
        # The report's cost and speed-up in plain lines (`report_text`), once the stop wrote it:
        # the controller's last lines, however it ended.
        self.headline: list[str] = []

    # -- set-up ------------------------------------------------------------------------------
    def open(self) -> bool:
        """Take the campaign folder and set the campaign up; False where a stop was asked for while
        it prepared the data (the start then binds nothing: `_prepare_data`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "experiments").mkdir(exist_ok=True)
        (self.dir / "proposals").mkdir(exist_ok=True)
        self._lock()
        if self.log_file is not None:  # only now: a second controller, refused, leaves the log alone
            log_to_file(self.log_file)
        self._drop_dead_temporaries()
        # (how long a writer of a run may still write after its end: until the fleet's kill)
        self.temporaries = TemporarySweep(
            self.dir, deadline_seconds(self.cfg) + backstop_grace(self.cfg.cluster)
        )
        self.heartbeat.start()
        self.study = open_study(
            self.dir,
            self.c.name,
            self.cfg.storage,
            self.sampler,
            self.cfg.storage_retry_seconds,
            stopping=lambda: self.stop_requested,  # a stop ends a wait for the database
        )
        if refused := study_refusal(self.study, self.cfg, self.fleet.pools, self.dir):
            self.heartbeat.withdraw()  # (refused: it ran nothing, and status says so)
            raise CampaignError(refused)
        if resuming := resuming_said(self.study.trials, self.dir, self.cfg.storage):
            log.info(resuming)
        self.sampler.follow(self.study)  # (a knob its study searched with a choice given twice)
        train_py = Path(self.c.train_py)  # config_check saw it and prepare.py exist
        self._drop_stale_git_locks()
        self.frontier = self._open_frontier(train_py.read_text())
        if changed := train_py_change(train_py, self.frontier.start_source()):
            log.warning(changed)
        self.harness = own_harness(self.dir, Path(self.c.prepare_py).resolve())
        now = self.clock.now
        budgets.keep_earlier_prices(self.study, self.dir / SAVED_CONFIG)  # before config.yaml is new
        self.ledger = Ledger(self.study, now, self._after_tell)
        pools = self.fleet.pools
        self.intake = Intake(self.cfg, self.dir, self.ledger, self.sampler, self.frontier, pools, now)
        confirm_on = confirm_tier(self.cfg, pools)
        self.decisions = Decisions(
            self.cfg, self.dir, self.ledger, self.intake, self.frontier, self.policy, confirm_on
        )
        self.launcher = Launcher(
            self.cfg,
            self.dir,
            self.ledger,
            self.intake,
            self.sampler,
            self.frontier,
            self.fleet,
            self.harness,
            now,
        )
        if self.c.prepare_data and not self._prepare_data():
            return False
        # Saved once this controller holds the campaign (a refused second one leaves it as it was)
        # and can run it: a start that failed on a mistyped storage or on its data measured nothing,
        # so a corrected command must not be held to the settings it was refused with.
        if changes := setting_changes(self.dir / SAVED_CONFIG, self.cfg):
            log.info(
                "settings changed since the last start (its config.yaml, now replaced): %s",
                "; ".join(changes),
            )
        if moved := tracking_move(self.dir, self.cfg):
            log.warning(moved)
        write_atomic(self.dir / SAVED_CONFIG, OmegaConf.to_yaml(self.cfg))
        if MEASUREMENT_ATTR not in self.study.user_attrs:  # (or a study begun before it was kept)
            self.study.set_user_attr(MEASUREMENT_ATTR, measurement(self.cfg))
        record_slots(self.study, self.fleet.pools)  # (`status` estimates the end with them)
        first_start = "started_at" not in self.study.user_attrs
        if first_start:
            self.study.set_user_attr("started_at", self.clock.now())
        self._count_wall_time(first_start)  # (from here: the data is ready)
        self._sweep_at_start()
        self._reconcile()
        self._recall_nodes()
        # at the start, or those a controller killed while queueing them missed
        self.intake.baselines(confirm_on)
        if (head := self.frontier.head_trial()) is not None:  # a frontier kept before runs were paired
            self.intake.new_frontier(head, confirm_on)
        self._warn_if_budget_is_all_baselines()
        return True

    def _count_wall_time(self, first_start: bool) -> None:
        """Count this controller's running time on the wall budget from now, after what earlier
        controllers ran (their controller.json's sum); time stopped does not count."""
        earlier = self.heartbeat.record.get(RAN_BEFORE)
        if earlier is None:
            earlier = 0.0 if first_start else self._ran_before_upgrade()
        self._ran_before = float(earlier)
        self._counting_since = self.clock.now()
        self.heartbeat.count_from(self._ran_before)

    def _ran_before_upgrade(self) -> float:
        """The wall time of a campaign an older version ran last, whose controller.json keeps no
        sum (`budget.older_version_seconds`)."""
        ran = budgets.older_version_seconds(self.study, self.heartbeat.before())
        log.info(
            "wall budget: %.2f h counted as the version before counted it (time stopped included) up to "
            "its last controller's stop; from now on only time a controller runs counts",
            ran / 3600,
        )
        return ran

    def _open_frontier(self, start: str) -> Frontier:
        """The frontier; begun again from `start` while the study holds no trial at all (a first
        start whose data step failed or was stopped queued nothing, so it bound nothing either)."""
        frontier = Frontier(self.dir / "frontier", start)
        if frontier.start_source() != start and not self.study.trials:
            shutil.rmtree(self.dir / "frontier")
            frontier = Frontier(self.dir / "frontier", start)
        return frontier

    def _drop_stale_git_locks(self) -> None:
        """The frontier's git locks, left by a git killed with its controller, on which every later
        commit would fail: only the controller, under the campaign lock, runs git there, so one
        found as it opens is stale."""
        for lock in (lock for pattern in GIT_LOCKS for lock in (self.dir / "frontier").glob(pattern)):
            lock.unlink()
            log.warning("removed %s, left by a git command killed with its controller", lock)

    def _drop_dead_temporaries(self) -> None:
        """The temporaries of writers killed mid-write (`files.replacing`) in the folders the
        controller, `report` and the agent write, each a file that would stay for good. Not in
        the experiment folders: runners on other hosts write there, whose pids this host cannot
        ask about."""
        folders = [self.dir, *(self.dir / sub for sub in FOLDERS_OF_WHOLE_FILES)]
        remove_temporaries(path for folder in folders for path in dead_writers_temporaries(folder))

    def _sweep_at_start(self) -> None:
        """The temporaries killed writers left in the folders of ended runs (`TemporarySweep`):
        in those its file lists, or, without one (a campaign begun before it was kept), once in
        every ended run's. Never in a running one's, where runners of other hosts may still write."""
        if self.temporaries.kept:
            self.temporaries.sweep()
        else:
            ended = (t for t in self.ledger.all() if t.state.is_finished())
            self.temporaries.sweep((experiment_dir(self.dir, t.number) for t in ended), writing=False)

    def _warn_if_budget_is_all_baselines(self) -> None:
        """A first start whose experiment budget the baselines use up tries no change, and one
        with no budget (each 0, as a researcher may write for "none to spend") runs and pays for
        its agent until stopped: say so now, not only in the final line, or never."""
        if self.ledger.launched:
            return
        if not budgets.limits(self.c.budget):
            log.warning(
                "no budget set (campaign.budget's max_experiments, max_wall_hours, max_gpu_hours and "
                "max_dollars are all 0, which is no limit): the campaign runs until stopped (Ctrl-C) or "
                "its proposer has nothing new; set one to end it"
            )
        limit = self.c.budget.max_experiments
        if not limit:
            return
        baselines = sum(1 for t in self.ledger.waiting() if t.user_attrs.get("kind") == "baseline")
        if baselines >= limit:
            log.warning(
                "campaign.budget.max_experiments=%d: the %d baseline runs use it all, so no change "
                "will be tried (raise it above %d to try some)",
                limit,
                baselines,
                baselines,
            )

    def _prepare_data(self) -> bool:
        """Download data and train the tokenizer once, here, rather than in every experiment; False
        where a stop was asked for meanwhile. The step runs in a session of its own, so Ctrl-C is
        the controller's to take, as at any other time: it ends the step (a download resumes where
        it stopped) instead of the step dying of it and the start failing."""
        log.info(
            "preparing %s data and tokenizer for the %s scale (cached after the first run)",
            self.c.data,
            self.c.scale,
        )
        cmd, env = data_step(self.cfg, self.harness)
        step = subprocess.Popen(cmd, env=env, start_new_session=True)
        try:
            while step.poll() is None and not self.stop_requested:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    step.wait(timeout=self.cfg.cluster.poll_seconds)
        finally:  # (a stop, or a second Ctrl-C raised here)
            if step.poll() is None:
                step.terminate()
                try:
                    step.wait(timeout=DATA_STEP_TERM_S)
                except subprocess.TimeoutExpired:
                    log.warning("the data step did not end %.0f s after SIGTERM: killed it", DATA_STEP_TERM_S)
                    with contextlib.suppress(ProcessLookupError):  # (its session: what it started too)
                        os.killpg(step.pid, signal.SIGKILL)
                    step.wait()
        if self.stop_requested:
            log.warning("stopped while preparing the data; running the command again prepares the rest")
            return False
        if step.returncode != 0:
            raise CampaignError(f"data preparation failed (see above): {' '.join(cmd)}")
        return True

    def _lock(self) -> None:
        try:
            self._lock_fd = take_lock(self.dir)
        except FolderLocked as err:
            raise CampaignLocked(str(err)) from None
        except LockUnusable as err:
            raise CampaignError(str(err)) from None

    def _reconcile(self) -> None:
        """Trials a previous controller left RUNNING: re-attach, collect, or fail and re-queue."""
        for t in trials(self.study, TrialState.RUNNING):
            exp_dir = experiment_dir(self.dir, t.number)
            outcome = ended_outcome(exp_dir, t.number)
            # A disk's refusal met while no controller ran is collected here, not by the loop,
            # whose look would take it for this controller's and stop it again (`disk_refusal`).
            if outcome is not None and (
                outcome.get("status") not in INFRA_STATUSES or outcome.get("disk_full")
            ):
                self._finish(Finished(t.number, outcome))
                continue
            # An interrupted run goes back to the fleet, which can tell a scancel from a preemption.
            handle = t.user_attrs.get("job", "")
            pool = t.user_attrs.get("pool", "")
            if "exp_dir" in t.user_attrs and not exp_dir.is_dir():  # deleted: no run can end in it
                self._finish(Finished(t.number, folder_gone(exp_dir)))
                continue
            if "exp_dir" in t.user_attrs and self.fleet.reattach(JobSpec(t.number, exp_dir, pool), handle):
                log.info("trial %d: re-attached to %s", t.number, handle)
                continue
            # A runner found ended may have ended since its outcome was read: its result is whole.
            outcome = ended_outcome(exp_dir, t.number) or outcome
            if outcome is not None:
                self._finish(Finished(t.number, outcome))
                continue
            why = "job lost" if handle else "controller stopped before the experiment started"
            self._finish(Finished(t.number, {"status": "lost", "reason": why}))

    def _recall_nodes(self) -> None:
        """Tell the fleet where the experiments of earlier controllers ran and how they ended, so
        a resumed campaign keeps out the nodes found unfit before: found again only from new
        failures, each would cost its trial one of its few retries."""
        for t in self.ledger.all():
            attrs = t.user_attrs
            if attrs.get("node") and attrs.get("pool"):
                status = "ok" if "val_bpb" in attrs else attrs.get("status", "")
                outcome = {k: attrs[k] for k in ("node", "node_unfit", "reason") if k in attrs}
                self.fleet.note_node(attrs["pool"], {**outcome, "status": status})

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> Summary:
        stop_reason = failure = ""
        ended = "interrupted: a second Ctrl-C or SIGTERM"  # unless the loop ends or raises otherwise
        opened = False
        try:
            with held_storage(self.cfg.storage):
                opened = self.open()
                if not opened:  # stopped while it set up: nothing to collect or launch
                    stop_reason = self._stop_reason()
                while opened:
                    finished_now = self.fleet.poll()
                    for done in finished_now:
                        self._finish(done)
                    if refused := disk_refusal(finished_now, self.dir, self._disk_refused_before):
                        raise CampaignError(refused)
                    self._decide_pending()
                    wave = self.pump.collect()
                    if wave is not None:
                        self.intake.wave(wave)
                    failure = self._broken_start()
                    stop_reason = failure or self._stop_reason()
                    if stop_reason:
                        if failure:  # no wave's calls for proposals none will run, nor past a budget
                            self.pump.stop(self._with_budget_reached(failure))
                        elif budgets.going_on_past(stop_reason):
                            self.pump.stop(stop_reason)
                        if self.stop_requested:
                            break
                        if failure:  # nothing can be judged: no run is owed, those running are waited for
                            if self.fleet.running() == 0:
                                break
                            self.fleet.wait(self.cfg.cluster.poll_seconds)
                            continue
                        self.launcher.launch(new=False)  # re-runs owed to a decision still run
                        if self.fleet.running() == 0 and not self.ledger.owed():
                            # what waits for a new frontier's run, left queued, is decided without it
                            self._decide_pending(final=True)
                            if not self.ledger.owed():  # else a last promotion's re-runs go first
                                break
                    else:
                        self._maybe_request_wave()
                        self.launcher.launch()
                    self.fleet.wait(self.cfg.cluster.poll_seconds)
            ended = failure or stop_reason
        except StoppedInOutage as err:
            self._database_lost = True
            ended = (
                f"stopped by {self.stopped_by} while the study's database could not be reached ({err.reason})"
            )
            raise
        except StudyUnavailable as err:
            self._database_lost = True
            ended = "error: " + (str(err).splitlines() or [type(err).__name__])[0]
            raise
        except Exception as err:
            ended = "error: " + (str(err).splitlines() or [type(err).__name__])[0]
            raise
        finally:
            self._close(ended, opened)
        if failure:
            raise CampaignError(failure)
        return self.summary(stop_reason, set_up=opened)

    def _close(self, ended: str, opened: bool) -> None:
        """What a controller does however it stops; the campaign's outputs only once it was opened.
        A second stop cuts only the wait for W&B short (what it did not send, the next run sends):
        the files a stop writes are written whole first (`_writing_what_a_stop_saves`)."""
        try:
            self.pump.close()
            if opened:
                with self._writing_what_a_stop_saves():
                    self.fleet.shutdown(cancel=False)
                    self._write_final_outputs(ended)
                if not (self._leaving or self._database_lost):  # (what W&B lacks, the next run sends)
                    self.tracker.update(self.study)
                    self.tracker.close(self.dir / REPORT_FILE)
        finally:
            try:
                with self._writing_what_a_stop_saves():
                    self.heartbeat.stop(ended)
            finally:
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def _write_final_outputs(self, ended: str) -> None:
        """results.tsv, and report.html unless the study's database failed: its report would wait
        storage_retry_seconds again for the database, then raise over the one line that says so."""
        try:
            if not self._database_lost:
                self._write_outputs(ended=ended)
                return
            write_results(self.ledger.table(), self.dir / "results.tsv")
            log.warning(
                "report.html not written: the study's database is out of reach; `autoresearch report %s` "
                "writes it once it is back",
                self.dir,
            )
        except OSError as err:  # (a full disk: derived files, which must not hide why it stopped)
            log.warning(
                "results.tsv and report.html not written: %s; `autoresearch report %s` writes them",
                write_failure(err, self.dir),
                self.dir,
            )

    def leave_now(self) -> None:
        """A second stop signal: leave at once, by KeyboardInterrupt (which the controller's caller
        answers with exit code 130), or, while the files a stop saves are written, as soon as they
        are whole. A third, once it is leaving, is no news."""
        if self._writing_stop_files:
            self._stop_held = True
        elif not self._leaving:
            self._leaving = True
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def _writing_what_a_stop_saves(self) -> Iterator[None]:
        """A block that writes what a stop saves (report.html, results.tsv, controller.json's last
        word): a second stop signal raised in it cut them out, so it is held until the block ends."""
        self._writing_stop_files = True
        try:
            yield
        finally:
            self._writing_stop_files = False
        if self._stop_held:
            self.leave_now()

    def _broken_start(self) -> str:
        """Why nothing can be judged: every baseline run of the starting train.py on the screen tier
        failed, and none is left to run; or on the validate tier, where then no change could ever
        be confirmed (a partition whose every job sbatch refuses would spend the budget on
        re-queued losses). Checked on each tier until a baseline there succeeds, then never again."""
        return self._broken_tier("screen") or self._broken_tier("validate")

    def _broken_tier(self, tier: str) -> str:
        if tier in self._baseline_measured:
            return ""
        runs = [
            t
            for t in trials(self.study)
            if t.user_attrs.get("kind") == "baseline" and t.user_attrs.get("tier", "screen") == tier
        ]
        if any(t.state == TrialState.COMPLETE for t in runs):
            self._baseline_measured.add(tier)
        if not runs or any(t.state != TrialState.FAIL for t in runs):
            return ""
        ran = [t for t in runs if t.user_attrs.get("status") not in NOT_RUN]
        first = (ran or runs)[0]
        why = f"trial {first.number}, {first.user_attrs.get('reason') or first.user_attrs.get('status', 'failed')}"
        where, judged = (
            ("", "nothing can be judged")
            if tier == "screen"
            else (f" on the {tier} tier", "no change can be confirmed")
        )
        if not ran:  # nothing says the train.py is at fault
            return (
                f"every baseline run of the starting train.py{where} was cancelled or lost to the cluster "
                f"({why}); {judged} without one: run the command again to queue them again "
                "(after fixing the cause, if the cluster refused them)"
            )
        late = all(str(t.user_attrs.get("reason", "")).startswith("timeout: killed at the") for t in ran)
        fix = (
            "raise cluster.grace_seconds (the deadline is 2 x the time budget + cluster.grace_seconds; "
            "start-up, compilation and evaluation must fit in what the training leaves of it)"
            if late
            else "fix the cause"
        )
        return (
            f"every baseline run of the starting train.py{where} failed ({why}); {judged} "
            f"against it: {fix}, then start over (a new campaign.name, or remove {self.dir})"
        )

    def _stop_reason(self) -> str:
        if self.stop_requested:
            return f"stopped by {self.stopped_by}"
        if self.intake.empty_waves >= MAX_EMPTY_WAVES and not self.ledger.waiting():
            return (
                f"the proposer had nothing new that could run in {MAX_EMPTY_WAVES} waves in a row "
                "(each candidate a duplicate, invalid, or a train.py that already ran)"
            )
        spend = self._spend()
        return budgets.exhausted(spend, self.c.budget) or ""

    def _with_budget_reached(self, failure: str) -> str:
        """`failure`, and a budget reached as well, where one is: the wave stopped for the failure
        alone was not told of the budget, which would have stopped it too."""
        budget = budgets.exhausted(self._spend(), self.c.budget)
        return f"{failure}; and the {budget}" if budget else failure

    def _spend(self) -> budgets.Spend:
        return budgets.spend(
            self.ledger.launched,
            self.ledger.rated_hours,
            {name: pool.price_per_gpu_hour for name, pool in self.fleet.pools.items()},
            self.dir,
            self._wall_seconds(),
        )

    def _wall_seconds(self) -> float:
        """Seconds the controllers ran, this one to now: what `max_wall_hours` counts."""
        since = self._counting_since
        return self._ran_before + (0.0 if since is None else max(0.0, self.clock.now() - since))

    def _maybe_request_wave(self) -> None:
        if self.pump.busy:
            return
        if (
            self.intake.empty_waves >= MAX_EMPTY_WAVES
            and self._ended == self._ended_at_ask
            and self.fleet.running() > 0
        ):
            # Its last waves had nothing new, and no experiment has ended since it was last asked:
            # the same question would get the same answer (an API call each, with Claude) as fast
            # as it answers. It is asked again once one of those running ends. (Trials told without
            # running, a queued twin skipped or an invalid draw, are no news: counted, they let a
            # proposer of twins be asked at every turn of the loop.)
            return
        waiting = len(self.ledger.waiting())
        if self.c.synchronous:
            if waiting == 0 and self.fleet.running() == 0 and not self.decisions.pending:
                self._ask()
            return
        low_water = self.c.queue_low_water or sum(p.slots for p in self.fleet.pools.values())
        if waiting < low_water:
            self._ask()

    def _ask(self) -> None:
        self._ended_at_ask = self._ended
        self.pump.request(self.context())

    # -- results -----------------------------------------------------------------------------
    def _decide_pending(self, final: bool = False) -> None:
        self._lose_vanished()
        self.decisions.decide_pending(final)

    def _lose_vanished(self) -> None:
        """Results awaiting their decision (a winner awaiting its re-runs among them) whose
        experiment folder was deleted: a keep commits the train.py there, and re-runs copy it, so
        each such trial is lost and queued again, as a resume does (`_reconcile`), with its
        queued re-runs dropped; the keep or the re-runs' launch ended the controller in a
        FileNotFoundError."""
        for number in sorted(self.decisions.pending):
            exp_dir = experiment_dir(self.dir, number)
            if exp_dir.is_dir():
                continue
            del self.decisions.pending[number]
            for rerun in self.ledger.queued_for("validates", number):
                if rerun.state == TrialState.WAITING:
                    self.ledger.drop(rerun, f"trial {number} was lost with its experiment folder")
            self._fail_and_requeue(self.ledger.trial(number), folder_gone(exp_dir), {})

    def _finish(self, done: Finished) -> None:
        trial = self.ledger.trial(done.trial)
        if trial.state != TrialState.RUNNING:
            return  # already told (a duplicate report)
        self.temporaries.sweep([experiment_dir(self.dir, trial.number)])
        self._ended += 1
        outcome = done.outcome
        status = outcome.get("status")
        attrs = {
            "node": outcome.get("node", ""),
            "gpus_seen": outcome.get("gpus_seen", ""),
            **self._slot_held(trial, outcome),
        }
        if outcome.get("slurm_job_id"):
            attrs["slurm_job_id"] = outcome["slurm_job_id"]
        if status in INFRA_STATUSES:
            self._fail_and_requeue(trial, outcome, attrs)
            return
        metrics = outcome.get("metrics")
        metrics = metrics if isinstance(metrics, dict) else {}
        val_bpb = figure(metrics, "val_bpb")
        if status != "ok" or val_bpb is None:
            reason = outcome.get("reason") or f"val_bpb is {metrics.get('val_bpb')!r}"
            # (a run that ended well but diverged: "ok: val_bpb is nan" read as a success among failures)
            said = f"{status}: {reason}" if status != "ok" else f"ran to its end with no result: {reason}"
            failed = "cancelled" if status == "cancelled" else "crash"
            self.ledger.fail(trial.number, {**attrs, "status": failed, "reason": said})
            log.warning("trial %d: %s", trial.number, said)
            if failed == "cancelled" and trial.user_attrs.get("kind") == "baseline":
                self.intake.baselines(self.decisions.confirm_on)  # no change can be judged without it
            return
        vram_mb = figure(metrics, "peak_vram_mb")
        attrs.update(
            val_bpb=float(val_bpb),
            memory_gb=None if vram_mb is None else round(vram_mb / 1024, 2),
            training_seconds=figure(metrics, "training_seconds"),
            # (unknown, not 0, where the harness knew no peak for the device: a CPU, or a GPU
            # missing from prepare.py's PEAK_BF16_FLOPS, for which train.py reports 0)
            mfu=None
            if "peak_flops" in metrics and metrics["peak_flops"] is None
            else figure(metrics, "mfu_percent"),
            num_steps=figure(metrics, "num_steps"),
            device=str(metrics.get("device", "")),
        )
        millions = figure(metrics, "num_params_M")  # the trainer's, in millions
        if millions is not None and math.isfinite(millions * 1e6):
            attrs["num_params"] = round(millions * 1e6)
        self.ledger.set(trial.number, attrs)
        self.decisions.add(trial)  # decided with the others of this poll (`run`)

    def _slot_held(self, trial: FrozenTrial, outcome: dict[str, Any]) -> dict[str, float | None]:
        """From when to when the trial held its slot (the GPU time billed, whatever became of it):
        the runner's times. An outcome the controller made up (the runner killed, or lost with its
        node or with an earlier controller) has none: its start is then the one its runner wrote to
        started.json (None: it never started), its end now, but no later than the fleets' kill
        deadline after that start (a controller resumed a day later must not bill the day)."""
        # (the times are read from files: one damaged by hand, a figure that is no number, is none)
        ended = outcome.get("ended_at") if finite_number(outcome.get("ended_at")) else self.clock.now()
        if finite_number(outcome.get("started_at")):
            return {"started_at": outcome["started_at"], "ended_at": ended}
        exp_dir = trial.user_attrs.get("exp_dir")
        started = started_at(self.dir / exp_dir) if exp_dir else None
        if started is None:
            return {"started_at": None, "ended_at": ended}
        killed_by = started + deadline_seconds(self.cfg) + backstop_grace(self.cfg.cluster)
        return {"started_at": started, "ended_at": min(ended, killed_by)}

    def _disk_refused_before(self, number: int) -> int:
        """How many earlier runs of trial `number`'s experiment (its chain of retries) the disk of
        their folder refused (`disk_full`)."""
        return int(self.ledger.trial(number).user_attrs.get("disk_refused", 0))

    def _fail_and_requeue(self, trial: FrozenTrial, outcome: dict[str, Any], ran: dict[str, Any]) -> None:
        """Lost to infrastructure, not to its own fault: fail it with the reason and run it again.
        `ran`: where and when it ran (its start and end are GPU time spent, whatever became of it).
        A run taken off its node from outside (`taken_off`: preempted, an administrator's requeue)
        is always run again, at no cost to its retries: a preemptible partition may take the node
        from it any number of times, and each time it would run had it stayed. So is one never
        launched (its controller stopped before it recorded the launch: a full disk refused the
        workspace, a kill -9), which started nothing, up to `max_retries` times (`unlaunched`
        counts them): past that, as a retry, else an edit whose workspace kills the controller
        each time is re-queued at every start for ever.
        So is one whose folder's disk refused train.py's writes (`disk_full`, not filled by
        train.py), the first time for its experiment, or the runner's own files, any time
        (`free_disk_refusal`): the campaign stops for it (`disk_refusal`) until a person frees
        space. A later refusal of train.py's writes in the same experiment (`disk_refused` counts
        them along its retries) spends a retry and stops nothing: the runner cannot see a quota's
        room, so a change whose own writes pass the quota looks like a disk others filled, and
        were each refusal free it would stop the campaign at every resume, for ever, never
        charged. Room was made for it after its first; refused again, its own writes are the
        likely cause, and a disk others really filled stops the campaign at another run's first."""
        retries = int(trial.user_attrs.get("retries", 0))
        reason = f"{outcome.get('status')}: {outcome.get('reason', '')}"
        never_launched = "exp_dir" not in trial.user_attrs
        unlaunched = int(trial.user_attrs.get("unlaunched", 0))
        disk_refused = int(trial.user_attrs.get("disk_refused", 0))
        refused_now = bool(outcome.get("disk_full")) and not outcome.get("runner_files")  # (train.py's)
        from_outside = outcome.get("taken_off") or (
            "disk full" if free_disk_refusal(outcome, disk_refused) else ""
        )
        free = bool(from_outside) or (never_launched and unlaunched < self.c.max_retries)
        again = "the disk refused it again, only an experiment's first disk refusal is free"
        said = ""  # what the log line adds: what the loss cost
        explores = trial.user_attrs.get("kind") == "exploration"  # (the sampler draws again)
        if not explores and (free or retries < self.c.max_retries):
            not_queued = self.intake.retry(
                trial,
                counted=not free,
                unlaunched=unlaunched + never_launched,
                disk_refused=disk_refused + refused_now,
            )
            reason += f"; not re-queued: {not_queued}" if not_queued else "; re-queued"
            if not not_queued and from_outside:
                said = f" (free: {from_outside}, it costs none of campaign.max_retries={self.c.max_retries})"
            elif not not_queued and free and never_launched:
                said = f" (free, {unlaunched + 1} of campaign.max_retries={self.c.max_retries}: it never launched)"
            elif not (not_queued or free):
                said = f" (retry {retries + 1} of campaign.max_retries={self.c.max_retries}"
                said += f": {again})" if refused_now else ")"
        elif not explores:
            said = f"; not re-queued: campaign.max_retries={self.c.max_retries} used"
            said += f" ({again})" if refused_now else ""
        exp_dir = self.dir / trial.user_attrs.get("exp_dir", "")
        if "exp_dir" in trial.user_attrs and exp_dir.is_dir() and started_at(exp_dir) is None:
            # (counted all the same: else a cluster that refuses every run is tried for ever)
            said += "; it never started, yet it counts as one of campaign.budget.max_experiments' launches"
        log.warning("trial %d: %s%s", trial.number, reason, said)
        where = {k: outcome[k] for k in ("node", "node_unfit") if outcome.get(k)}
        self.ledger.fail(trial.number, {**ran, **where, "status": "lost", "reason": reason})

    def _after_tell(self) -> None:
        """Every result: W&B is sent what finished; every `plot_every` results, the files are
        redrawn (counted here: counting the study's finished trials was a scan per result)."""
        self.tracker.update(self.study)
        self._told += 1
        if self._told % max(1, self.cfg.tracking.plot_every) == 0:
            self._write_outputs()

    def _write_outputs(self, ended: str | None = None) -> None:
        """results.tsv and progress.png; and report.html when the controller stops, and `ended` why."""
        table = self.ledger.table()
        write_results(table, self.dir / "results.tsv")
        if ended is not None:  # (re-draws progress.png as well)
            self.headline = headline(write_report(self.study, self.dir, self.cfg, ended=ended))
        elif table:
            plot_progress(table, self.dir / "progress.png", self.c.name)

    # -- what proposers see ------------------------------------------------------------------
    def context(self) -> CampaignContext:
        done = finished(self.study)
        history = [self._record(t) for t in sorted(done, key=lambda t: t.number)]
        in_flight = trials(self.study, TrialState.RUNNING, TrialState.WAITING)
        history += [self._record(t) for t in sorted(in_flight, key=lambda t: t.number)]
        judged = self.decisions.judged()
        spend = self._spend()
        source = self.frontier.source()
        tiers = {}
        for tier, pool_name in self.cfg.cluster.tiers.items():
            pool = self.fleet.pools.get(pool_name)
            if pool and tier in ("screen", self.decisions.confirm_on):  # those a proposal may use
                tiers[tier] = f"{pool.gpu_type} x{pool.slots} ({pool.partition or pool.name})"
        return CampaignContext(
            frontier_source=source,
            frontier_val_bpb={tier: statistics.fmean(runs) for tier, (runs, _) in judged.items()},
            lineage=[r for r in history if r.status == "keep"],
            history=history,
            knobs=self.knobs,
            knob_values=read_knobs(source),
            noise_std=judged["screen"][1] if "screen" in judged else None,
            budget_left=budgets.remaining(spend, self.c.budget),
            dollar_budget=budgets.wave_dollars(spend, self.c.budget, self.dir),
            tiers=tiers,
            wave_size=self.c.wave_size,
            max_wave=self.c.max_wave,
            rejected=self.intake.rejected[-MAX_REJECTIONS_SHOWN:],
            campaign_dir=str(self.dir),
            frontier_commit=self.frontier.head(),
            harness={
                "scale": self.c.scale,
                "data": self.c.data,
                "time_budget_seconds": f"{time_budget_seconds(self.cfg):g}",
                "metric": "val_bpb on the held-out split, computed by prepare.py from the model's logits",
            },
            keep_rule=KeepRule(
                min_delta=self.c.min_delta,
                promote_z=self.c.promote_z,
                keep_z=self.c.keep_z,
                validate_seeds=self.c.validate_seeds if self.decisions.confirm_on else 0,
                confirm_tier=self.decisions.confirm_on,
            ),
            fix_attempts=dict(fix_attempts([*done, *in_flight])),  # every trial: none is PRUNED
        )

    def _record(self, t: FrozenTrial) -> ExperimentRecord:
        if t.number in self._records:
            return self._records[t.number]
        attrs = t.user_attrs
        record = ExperimentRecord(
            number=t.number,
            description=attrs.get("description", ""),
            status=status_of(t)
            or ("confirming" if attrs.get("promoted") else RECORD_STATUS.get(t.state, "discard")),
            val_bpb=t.value if t.state == TrialState.COMPLETE else attrs.get("val_bpb"),  # run, not decided
            tier=attrs.get("tier", "screen"),
            knobs=json.loads(attrs.get("knobs", "{}")),
            reason=attrs.get("reason", ""),
            source=attrs.get("source", ""),
            parent=attrs.get("parent", ""),
            delta=attrs.get("delta"),
            ended_at=attrs.get("ended_at"),
        )
        if t.state.is_finished():
            self._records[t.number] = record
        return record

    def summary(self, stop_reason: str, set_up: bool = True) -> Summary:
        done = finished(self.study)
        kept = sorted((t for t in done if t.user_attrs.get("status") == "keep"), key=lambda t: t.number)
        return Summary(
            experiments=sum(1 for t in done if "exp_dir" in t.user_attrs),
            kept=len(kept),
            crashed=sum(1 for t in done if t.user_attrs.get("status") == "crash"),
            not_run=not_run_counts(done),
            compared=compare(self.ledger.table()),  # screen tier: one kind of hardware, as `status`
            stop_reason=stop_reason,
            kept_descriptions=[f"trial {t.number}: {t.user_attrs.get('description', '')}" for t in kept],
            set_up=set_up,
            headline=self.headline,
            running=sum(
                1 for t in trials(self.study, TrialState.RUNNING) if t.user_attrs.get("ended_at") is None
            ),
        )
