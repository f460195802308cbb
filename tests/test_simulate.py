"""The scale simulator drives the real campaign engine on a virtual clock."""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import pytest
from engine_helpers import launched_within_budget, load, load_script, read_tsv
from optuna.trial import TrialState
from trainer_helpers import TRAINER_DIR

from autoresearch.knobs import set_knobs
from autoresearch.proposers.base import KnobSpec

TRAIN_PY = TRAINER_DIR / "train.py"


@pytest.fixture(scope="module")
def sim():
    return load_script("simulate")


def _args(lost_rate: float = 0.05) -> argparse.Namespace:
    return argparse.Namespace(
        run_minutes=5.5,
        queue_wait=60.0,
        lost_rate=lost_rate,
        seed=1,
        noise=0.002,
        seed_share=0.0,
        shape_share=0.0,
        set=[],
        append_ms=0.0,
        read_ms=0.0,
    )


def test_a_simulated_fleet_runs_every_experiment_through_the_engine(sim, tmp_path: Path) -> None:
    r = sim.simulate(8, 40, _args(), tmp_path)
    study = load(tmp_path / "sim8")
    launched = launched_within_budget(study, 40)
    assert r["experiments"] == len(launched)
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in launched)  # none left running
    assert len(read_tsv(tmp_path / "sim8" / "results.tsv")) == sum(
        1 for t in study.trials if t.state.is_finished()
    )
    # 8 GPUs cannot run 40 experiments of at least 0.95 x 5.5 minutes in less than 5 rounds.
    assert r["virtual_hours"] >= 40 * 0.95 * 5.5 / 60 / 8
    assert 0 < r["utilisation"] <= 1 and r["speedup"] == pytest.approx(8 * r["utilisation"])
    assert r["controller_s_per_exp"] > 0 and r["allowed_s_per_exp"] == pytest.approx(5.5 * 60 / 8)
    statuses = {t.user_attrs.get("status") for t in launched}
    assert {"baseline", "discard"} <= statuses and "lost" in statuses  # node failures are re-queued
    ran = [t for t in launched if "val_bpb" in t.user_attrs]
    assert ran and all(t.user_attrs["num_params"] >= 50_000_000 for t in ran)  # the landscape's shapes
    assert (tmp_path / "sim8" / "report.html").is_file()  # the same ending as a real campaign
    # Journal appends are counted as written: one trial creation per trial in the study.
    created = r["appends_by_kind"]["create_trial"] * r["experiments"]
    assert created == pytest.approx(len(study.trials))
    assert r["appends_per_exp"] == pytest.approx(sum(r["appends_by_kind"].values()))
    # The controller reads the journal when it opens it and after each of its appends, no more.
    assert 0 < r["reads_per_exp"] <= r["appends_per_exp"] + 1 / r["experiments"]
    # The true gain: the landscape without its noise, from the start to the final frontier.
    cfg = sim.compose(8, 40, tmp_path / "again", [])
    knobs = [
        KnobSpec(name, k.kind, k.low, k.high, k.log, tuple(k.choices))
        for name, k in cfg.campaign.knobs.items()
    ]
    surface = sim.Surface(TRAIN_PY.read_text(), knobs, seed=1)
    final = (tmp_path / "sim8" / "frontier" / "train.py").read_text()
    assert r["true_gain"] == pytest.approx(surface.expected(TRAIN_PY.read_text()) - surface.expected(final))
    assert 0 <= r["real"] <= r["kept"] == sum(1 for t in launched if t.user_attrs.get("status") == "keep")


@pytest.mark.timeout(300)  # (a screen partition with no slot waited for ever)
def test_one_simulated_gpu_screens_and_confirms_as_a_sequential_loop(sim, tmp_path: Path) -> None:
    cfg = sim.compose(1, 16, tmp_path / "cfg", [])
    assert {n: p.slots for n, p in cfg.cluster.partitions.items()} == {"h100": 1}
    assert cfg.cluster.tiers == {"screen": "h100"}
    r = sim.simulate(1, 16, _args(lost_rate=0.0), tmp_path)
    launched = launched_within_budget(load(tmp_path / "sim1"), 16)
    assert r["experiments"] == len(launched) >= 16
    assert r["virtual_hours"] >= 16 * 0.95 * 5.5 / 60  # one after another
    assert {t.user_attrs.get("tier") for t in launched} == {"screen"}


def test_the_surface_rewards_the_hidden_optimum_and_is_repeatable(sim) -> None:
    start = TRAIN_PY.read_text()
    knobs = [KnobSpec("MATRIX_LR", "float", 0.01, 0.16, True, ())]
    surface = sim.Surface(start, knobs, seed=3, noise=0.0)
    optimum = surface.bowls["MATRIX_LR"][0]
    at_optimum = set_knobs(start, {"MATRIX_LR": math.exp(optimum)})
    assert surface.score(at_optimum, 42) < surface.score(start, 42)
    noisy = sim.Surface(start, knobs, seed=3, noise=0.002)
    assert noisy.score(start, 42) == noisy.score(start, 42) != noisy.score(start, 43)
    edited = start.replace("F.relu(self.c_fc(x)).square()", "F.gelu(self.c_fc(x))")
    effect = surface.score(edited, 42) - surface.score(start, 42)
    assert effect != 0 and surface.score(edited, 7) - surface.score(start, 7) == pytest.approx(effect)


def test_the_seed_share_of_the_noise_is_drawn_alike_by_every_version(sim) -> None:
    start = TRAIN_PY.read_text()
    knobs = [KnobSpec("MATRIX_LR", "float", 0.01, 0.16, True, ())]
    other = set_knobs(start, {"MATRIX_LR": 0.08})

    def deltas(share: float) -> list[float]:
        surface = sim.Surface(start, knobs, seed=3, noise=0.002, seed_share=share)
        true = surface.expected(other) - surface.expected(start)
        return [surface.score(other, s) - surface.score(start, s) - true for s in range(42, 242)]

    assert max(map(abs, deltas(1.0))) == pytest.approx(0.0, abs=1e-12)  # all of it: cancels seed for seed
    # None of it: two independent draws, std 0.002 x sqrt(2); 80%: 0.002 x sqrt(2 x 0.2).
    assert statistics.stdev(deltas(0.0)) == pytest.approx(0.002 * math.sqrt(2), rel=0.15)
    assert statistics.stdev(deltas(0.8)) == pytest.approx(0.002 * math.sqrt(0.4), rel=0.15)


def test_the_shape_share_of_the_noise_is_drawn_alike_by_versions_of_one_shape(sim) -> None:
    start = TRAIN_PY.read_text()
    knobs = [KnobSpec("MATRIX_LR", "float", 0.01, 0.16, True, ()), KnobSpec("DEPTH", "int", 6, 12, False, ())]
    surface = sim.Surface(start, knobs, seed=3, noise=0.002, seed_share=0.2, shape_share=0.75)
    lr, deeper = set_knobs(start, {"MATRIX_LR": 0.08}), set_knobs(start, {"DEPTH": 10})
    assert surface.shape(lr) == surface.shape(start) != surface.shape(deeper)

    def spread(other: str) -> float:
        true = surface.expected(other) - surface.expected(start)
        return statistics.stdev(
            surface.score(other, s) - surface.score(start, s) - true for s in range(42, 242)
        )

    # Of one shape, 95% of the noise is drawn alike: 0.002 x sqrt(2 x 0.05); of another, 20%.
    assert spread(lr) == pytest.approx(0.002 * math.sqrt(0.1), rel=0.15)
    assert spread(deeper) == pytest.approx(0.002 * math.sqrt(1.6), rel=0.15)


@pytest.mark.parametrize("override", ["agent.kind=claude", "agent=claude", "~agent"])
def test_agent_settings_are_refused_not_ignored(
    sim, monkeypatch: pytest.MonkeyPatch, capsys, override: str
) -> None:
    """The simulator proposes with the offline proposer: `--set agent.kind=claude` (or the Claude
    proposer's config group, `agent=claude`) ran it anyway, and its figures read as Claude's."""
    monkeypatch.setattr("sys.argv", ["simulate.py", "--gpus", "1", "--experiments", "1", "--set", override])
    with pytest.raises(SystemExit) as stopped:
        sim.main()
    assert stopped.value.code == 2
    assert f"{override}: the simulator always proposes with the offline proposer" in capsys.readouterr().err
