"""The proposal pump: asks the proposer for the next wave in the background.

GPUs never wait for the proposer: the loop hands over a context and goes on scheduling; the wave
is collected on a later turn of the loop. `SyncPump` answers at once, for the simulator and tests.
A pump stopped (a budget reached, the controller leaving) stops its wave's paid calls, and hands
the campaign no wave after it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent.futures import Future

from autoresearch.proposals import Wave
from autoresearch.proposers.base import CampaignContext, Proposer

log = logging.getLogger("autoresearch")


class BackgroundPump:
    """One wave at a time, in a daemon thread: a controller told to stop (Ctrl-C, SIGTERM before a
    time limit) leaves at once, not after a Claude call that can take minutes to end."""

    def __init__(self, proposer: Proposer) -> None:
        self.proposer = proposer
        self._future: Future[Wave] | None = None
        # Why the wave on its way makes no more calls ("" while it may), and why none of this
        # pump's waves may (the controller leaving): each wave's context carries them
        # (`CampaignContext.stopping`), so a proposer that calls a paid API stops calling for this
        # campaign alone, and the same proposer serves a later campaign whole.
        self._wave_stopped = ""
        self._closed = ""

    @property
    def busy(self) -> bool:
        return self._future is not None and not self._future.done()

    def stopping(self) -> str:
        return self._wave_stopped or self._closed

    def stop(self, reason: str) -> None:
        """A budget reached, or nothing can be judged (no proposal would run): the wave on its
        way ends before its next call, and is not handed over. The first reason stays: it is the
        cause. A wave asked for later starts afresh (the campaign asks for none while a budget
        binds), so a stop on a figure that went back under its limit cannot leave the campaign
        asking for waves that never come."""
        self._wave_stopped = self._wave_stopped or reason

    def _with_stop(self, context: CampaignContext) -> CampaignContext:
        """`context` with the stop its wave asks before each paid call: this pump's, or the dollar
        budget reached by the wave's own calls (`budget.WaveDollars`: the campaign's rule, on the
        ledger where the campaign counts them too). The campaign's loop sees that spend only when
        it looks again; the wave would have gone on for up to max_inspect_turns + 2 calls past the
        cap."""
        dollars = context.dollar_budget

        def stopping() -> str:
            if dollars is not None and (reached := dollars.reached()):
                self.stop(reached)
            return self.stopping()

        self._wave_stopped = ""  # (a new wave: the last one was collected)
        return dataclasses.replace(context, stopping=stopping)

    def request(self, context: CampaignContext) -> None:
        if self._future is None:
            context = self._with_stop(context)
            future: Future[Wave] = Future()
            threading.Thread(
                target=self._propose, args=(context, future), name="proposer", daemon=True
            ).start()
            self._future = future

    def _propose(self, context: CampaignContext, future: Future[Wave]) -> None:
        try:
            future.set_result(self.proposer.propose(context))
        except BaseException as err:  # (SystemExit too: the future must end, or no wave comes again)
            future.set_exception(err)

    def collect(self) -> Wave | None:
        if self._future is None or not self._future.done():
            return None
        future, self._future = self._future, None
        if self.stopping():  # cut short: no wave the campaign wants, nor one it counts as empty
            return None
        try:
            return future.result()
        except Exception as err:  # a proposer bug must not end the campaign
            log.error("proposer %s failed: %s", self.proposer.name, err)
            return Wave(rationale=f"proposer failed: {err}", source=self.proposer.name)

    def close(self) -> None:
        self._future = None  # a wave still on its way is dropped with its thread at exit
        self._closed = "the controller is stopping: no more calls to the API"  # (nor for the dropped wave)


class SyncPump(BackgroundPump):
    """Proposes inside `request`: deterministic, for simulation and tests."""

    def __init__(self, proposer: Proposer) -> None:
        super().__init__(proposer)
        self._wave: Wave | None = None

    @property
    def busy(self) -> bool:
        return False

    def request(self, context: CampaignContext) -> None:
        if self._wave is None:
            self._wave = self.proposer.propose(self._with_stop(context))

    def collect(self) -> Wave | None:
        wave, self._wave = self._wave, None
        return None if self.stopping() else wave

    def close(self) -> None:
        pass
