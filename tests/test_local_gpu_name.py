"""A local fleet's slots and the model its results name (`fleet.gpus`): the GPUs this process may
use, and on a GPU in MIG mode each of its instances, named by the GPU and the slice's profile.

The machine the tests run on has no GPU, let alone MIG: the one stand-in is an `nvidia-smi` script
first on PATH that prints what the real `nvidia-smi -L` prints (the MIG lines as drivers from R470
on print them), and the CSV the real `--query-gpu=index,uuid,mig.mode.current,name
--format=csv,noheader` prints, so all the code that reads them runs as on a GPU machine."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import optuna
import pytest
from engine_helpers import (
    ENV_DUMP,
    FREEZER,
    freezer_cgroup,
    make_experiment,
    make_fleet,
    state_of,
    wait_for,
)

from autoresearch.config import ClusterConfig, PartitionConfig
from autoresearch.fleet import gpus
from autoresearch.fleet.base import UNNAMED_GPU, Fleet, JobSpec, Pool
from autoresearch.fleet.factory import FleetPlan, plan_fleet
from autoresearch.hardware import HARDWARE_ATTR, hardware_changes, hardware_of

A100 = "NVIDIA A100-SXM4-80GB"
H100 = "NVIDIA H100 80GB HBM3"
GPUS = [  # index, uuid, name
    ("0", "GPU-1b2c3d4e-0000-1111-2222-333344445555", A100),
    ("1", "GPU-8f2c9a01-6666-7777-8888-99990000aaaa", H100),
]
H100_UUIDS = [GPUS[1][1], "GPU-8f2c9a01-6666-7777-8888-99990000bbbb"]  # a machine of two H100s
MIG_A100 = "NVIDIA A100-SXM4-40GB"
MIG_A100_UUID = "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"
SLICES = [f"MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3{i}" for i in range(7)]  # seven 1g.5gb instances
SLICE = f"{MIG_A100} MIG 1g.5gb"  # as torch.cuda.get_device_name names one
QUERY = "--query-gpu=index,uuid,mig.mode.current,name --format=csv,noheader"  # as gpus.py asks it


def stand_in_nvidia_smi(
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    listing: list[str],
    query: list[str],
    listing_fails: str = "",
    query_fails: bool = False,
    listing_hangs: bool = False,
    frozen_in: Path | None = None,
) -> None:
    """An `nvidia-smi` first on PATH whose `-L` prints `listing` (or, given `listing_fails`, says
    it and exits 9, as nvidia-smi does on an NVML error; given `listing_hangs`, never answers, as
    on a hung driver; given `frozen_in`, a frozen freezer cgroup, writes its pid to `smi.pid` in
    `folder` and joins it: in D, where KILL cannot end it, as in a hung driver's call), and whose `--query-gpu` of the fields read prints `query`, a line each (or
    fails), leaving a file `query-asked` in `folder`; any other arguments it refuses, as nvidia-smi does."""
    fail = "exit 9"
    listed = f"echo {listing_fails!r}; {fail}" if listing_fails else _printed(listing)
    if listing_hangs:
        listed = "exec sleep 600"
    if frozen_in:
        listed = f"echo $$ > {str(folder / 'smi.pid')!r}; echo $$ > {str(frozen_in / 'cgroup.procs')!r}; exec sleep 600"
    script = folder / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1 $2" in\n'
        f"  '-L ') {listed};;\n"
        f"  '{QUERY}') : > {str(folder / 'query-asked')!r}; {fail if query_fails else _printed(query)};;\n"
        "  *) echo 'Invalid combination of input arguments.' >&2; exit 2;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def _printed(lines: list[str]) -> str:
    """A shell command printing `lines`, one a line."""
    return f"printf '%s\\n' {' '.join(repr(line) for line in lines)}"


@pytest.fixture
def mixed_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An A100 listed first and an H100."""
    stand_in_nvidia_smi(
        tmp_path,
        monkeypatch,
        [f"GPU {i}: {name} (UUID: {uuid})" for i, uuid, name in GPUS],
        [f"{i}, {uuid}, Disabled, {name}" for i, uuid, name in GPUS],  # an H100 or A100 can take MIG mode
    )


@pytest.fixture
def mig_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One A100 in MIG mode, split in seven 1g.5gb instances."""
    instances = [f"  MIG 1g.5gb      Device  {i}: (UUID: {uuid})" for i, uuid in enumerate(SLICES)]
    stand_in_nvidia_smi(
        tmp_path,
        monkeypatch,
        [f"GPU 0: {MIG_A100} (UUID: {MIG_A100_UUID})", *instances],
        [f"0, {MIG_A100_UUID}, Enabled, {MIG_A100}"],
    )


def set_visible_devices(monkeypatch: pytest.MonkeyPatch, visible: str | None) -> None:
    """CUDA_VISIBLE_DEVICES set to `visible`, or unset for None (every GPU listed)."""
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)


def local_cluster() -> ClusterConfig:
    return ClusterConfig(partitions={"local": PartitionConfig(gpu_type="auto", slots=0)})  # a slot per device


def local_fleet() -> Fleet:
    return make_fleet(local_cluster(), deadline_s=60, campaign_dir="")


def local_gpu_type() -> str:
    return local_fleet().pools["local"].gpu_type


@pytest.mark.parametrize("visible", ["1", GPUS[1][1], GPUS[1][1][:12]], ids=["index", "uuid", "uuid-start"])
@pytest.mark.usefixtures("mixed_machine")
def test_the_gpu_cuda_visible_devices_picks_is_named_not_the_first_listed(
    monkeypatch: pytest.MonkeyPatch, visible: str
) -> None:
    """CUDA_VISIBLE_DEVICES=1 on a machine whose GPU 0 is an A100: the H100 the runs train on was
    recorded as an A100, and a resume held the tier to the A100."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert local_gpu_type() == H100


@pytest.mark.usefixtures("mixed_machine")
def test_visible_gpus_of_two_models_are_named_both_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # all the machine lists
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        assert local_gpu_type() == f"{A100} + {H100}"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert A100 in warning and H100 in warning and "CUDA_VISIBLE_DEVICES" in warning


@pytest.mark.usefixtures("mixed_machine")
def test_gpus_of_one_model_are_named_without_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        assert local_gpu_type() == A100
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.usefixtures("mixed_machine")
def test_a_users_cuda_device_order_is_overridden_with_one_warning_where_slots_are_indices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """CUDA_DEVICE_ORDER=FASTEST_FIRST in the user's shell was kept for the runs: CUDA_VISIBLE_DEVICES=1,
    nvidia-smi's H100 and so named, was CUDA's second fastest, the A100, its runs named an H100.
    The runs get nvidia-smi's order, PCI_BUS_ID, and one line says why."""
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        fleet = local_fleet()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "CUDA_DEVICE_ORDER=FASTEST_FIRST is set" in warning and "(1)" in warning
    assert "the runs get CUDA_DEVICE_ORDER=PCI_BUS_ID" in warning and "\n" not in warning
    job = JobSpec(0, make_experiment(tmp_path, ENV_DUMP, deadline=60, name="e0", trial=0), "local")
    fleet.submit([job])
    wait_for(lambda: fleet.poll(), 120, "the local job", every=0.05)
    env = json.loads((job.exp_dir / "env.json").read_text())
    assert (env["CUDA_VISIBLE_DEVICES"], env["CUDA_DEVICE_ORDER"]) == ("1", "PCI_BUS_ID")


@pytest.mark.usefixtures("mixed_machine")
def test_a_users_cuda_device_order_is_not_spoken_of_where_the_slots_are_named_by_uuid(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A UUID names one GPU in either order: a warning there would be noise."""
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", GPUS[1][1])
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        assert local_gpu_type() == H100
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.usefixtures("mig_machine")
def test_each_mig_instance_is_a_slot_given_by_its_uuid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An A100 split in seven: the fleet counted nvidia-smi's one GPU, gave its one slot
    CUDA_VISIBLE_DEVICES=0, where CUDA uses one instance, six idle, and named the runs' hardware
    the whole A100's, so a resume on a whole A100 compared its runs with the slices'."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fleet = local_fleet()
    (pool,) = fleet.pools.values()
    assert (pool.slots, pool.gpu_type) == (7, SLICE)
    jobs = [
        JobSpec(i, make_experiment(tmp_path, ENV_DUMP, deadline=60, name=f"e{i}", trial=i), pool.name)
        for i in range(7)
    ]
    fleet.submit(jobs)
    finished: list = []
    wait_for(lambda: finished.extend(fleet.poll()) or len(finished) >= 7, 120, "seven local jobs", every=0.05)
    assert {f.outcome["status"] for f in finished} == {"ok"}
    devices = [json.loads((j.exp_dir / "env.json").read_text())["CUDA_VISIBLE_DEVICES"] for j in jobs]
    assert sorted(devices) == sorted(SLICES)


@pytest.mark.parametrize(
    ("visible", "devices"),
    [
        (f"{SLICES[2]},{SLICES[5]}", [SLICES[2], SLICES[5]]),
        (SLICES[4][:12], [SLICES[4][:12]]),
        ("0", ["0"]),
        (MIG_A100_UUID, [MIG_A100_UUID]),
    ],
    ids=["mig-uuids", "mig-uuid-start", "gpu-index", "gpu-uuid"],
)
@pytest.mark.usefixtures("mig_machine")
def test_cuda_visible_devices_naming_mig_instances_or_their_gpu_is_honoured(
    monkeypatch: pytest.MonkeyPatch, visible: str, devices: list[str]
) -> None:
    """MIG UUIDs the user gives are the slots, named by their profile (they were named 'gpu', not
    known). An index or UUID of a GPU in MIG mode (CUDA_VISIBLE_DEVICES=0 in a Slurm job given one
    slice) was a slot per instance -L lists, seven, each given a MIG UUID where CUDA may open only
    the job's slice; it is one slot, given the entry, on the one instance CUDA uses, named by it."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    plan = plan_fleet(local_cluster())
    assert (plan.gpus, plan.pools["local"].slots, plan.pools["local"].gpu_type) == (
        devices,
        len(devices),
        SLICE,
    )


@pytest.fixture
def uncut_mig_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An A100 in MIG mode with no instance created yet, which `-L` lists as a plain GPU, and an H100."""
    stand_in_nvidia_smi(
        tmp_path,
        monkeypatch,
        [f"GPU 0: {MIG_A100} (UUID: {MIG_A100_UUID})", f"GPU 1: {H100} (UUID: {GPUS[1][1]})"],
        [f"0, {MIG_A100_UUID}, Enabled, {MIG_A100}", f"1, {GPUS[1][1]}, Disabled, {H100}"],
    )


@pytest.mark.parametrize("visible", [None, "0,1"], ids=["all-listed", "cuda-visible-devices"])
@pytest.mark.usefixtures("uncut_mig_machine")
def test_a_gpu_in_mig_mode_with_no_instance_gets_no_slot_and_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, visible: str | None
) -> None:
    """CUDA runs nothing on a GPU in MIG mode with no instance: it got a slot, its index, where
    every run failed. -L shows no instance too where there are some this user or container may not
    open: the warning, which sent every user to root's commands, also says what to do in a container."""
    set_visible_devices(monkeypatch, visible)
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        plan = plan_fleet(local_cluster())
    assert (plan.gpus, plan.pools["local"].slots, plan.pools["local"].gpu_type) == (["1"], 1, H100)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "GPU 0" in warning and MIG_A100_UUID in warning and "no MIG instance" in warning
    assert "as root, create instances" in warning and "disable MIG mode" in warning
    assert "none this user or container may open" in warning and '"device=0:0"' in warning
    assert "NVIDIA_VISIBLE_DEVICES=MIG-" in warning and "\n" not in warning


def test_a_gpu_campaign_whose_only_gpu_is_in_mig_mode_with_no_instance_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_nvidia_smi(
        tmp_path,
        monkeypatch,
        [f"GPU 0: {MIG_A100} (UUID: {MIG_A100_UUID})"],
        [f"0, {MIG_A100_UUID}, Enabled, {MIG_A100}"],
    )
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ValueError, match="this machine shows no GPU"):
        plan_fleet(local_cluster(), require_gpu=True)


def test_a_listing_none_of_whose_lines_is_understood_falls_back_to_the_query_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`-L` in a format no driver prints yet (the stand-in's guess at one): the machine read as
    having no GPU, and a GPU campaign was refused on it; the GPUs `--query-gpu` lists, a CSV
    whose fields are stable, are its slots, as before `-L` was read."""
    stand_in_nvidia_smi(
        tmp_path,
        monkeypatch,
        [f"Device {i} [{H100}] uuid={uuid}" for i, uuid in enumerate(H100_UUIDS)],
        [f"{i}, {uuid}, Disabled, {H100}" for i, uuid in enumerate(H100_UUIDS)],
    )
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        plan = plan_fleet(local_cluster(), require_gpu=True)
    assert (plan.gpus, plan.pools["local"].slots, plan.pools["local"].gpu_type) == (["0", "1"], 2, H100)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "nvidia-smi -L" in warning and "none of which is understood" in warning
    assert f"Device 0 [{H100}]" in warning and "--query-gpu" in warning
    assert "MIG" not in warning  # no GPU here is in MIG mode: how one would be named is noise


def test_a_listing_that_fails_falls_back_to_the_query_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`-L` exiting non-zero where `--query-gpu` works (a permission the listing needs and the
    query does not, in a container): the machine read as having no GPU, and a GPU campaign was
    refused on it; the GPUs `--query-gpu` lists are its slots, with a warning saying what -L said."""
    stand_in_nvidia_smi(
        tmp_path,
        monkeypatch,
        [],
        [f"{i}, {uuid}, Disabled, {H100}" for i, uuid in enumerate(H100_UUIDS)],
        listing_fails="Insufficient Permissions",
    )
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        plan = plan_fleet(local_cluster(), require_gpu=True)
    assert (plan.gpus, plan.pools["local"].slots) == (["0", "1"], 2)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "nvidia-smi -L failed (Insufficient Permissions)" in warning and "--query-gpu" in warning
    assert "\n" not in warning and "MIG" not in warning


def test_a_machine_whose_nvidia_smi_fails_at_both_shows_no_gpu_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No driver loaded: nvidia-smi fails at both, and the machine is a CPU machine, as before."""
    stand_in_nvidia_smi(
        tmp_path, monkeypatch, [], [], listing_fails="NVIDIA-SMI has failed", query_fails=True
    )
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        plan = plan_fleet(local_cluster())
    assert (plan.gpus, plan.pools["local"].gpu_type) == ([], "cpu")
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("visible", [None, "0,1"], ids=["all-listed", "cuda-visible-devices"])
def test_a_listing_that_hangs_is_waited_for_once_and_said_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, visible: str | None
) -> None:
    """A hung driver: `-L` timed out, then the query was asked and timed out too, the start
    waiting twice (20 s) and saying nothing of it; the query is not asked, and one line says
    nvidia-smi hung and what the fleet does without the GPUs read."""
    monkeypatch.setattr(gpus, "SMI_TIMEOUT_S", 0.2)  # the stand-in never answers: no race
    stand_in_nvidia_smi(
        tmp_path, monkeypatch, [], [f"0, {H100_UUIDS[0]}, Disabled, {H100}"], listing_hangs=True
    )
    set_visible_devices(monkeypatch, visible)
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        plan = plan_fleet(local_cluster())
    assert not (tmp_path / "query-asked").exists()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "nvidia-smi -L did not answer in 0.2 s" in warning and "\n" not in warning
    if visible is None:
        assert (plan.gpus, plan.pools["local"].gpu_type) == ([], "cpu")
        assert "the fleet sees no GPU here" in warning
    else:
        assert (plan.gpus, plan.pools["local"].gpu_type) == (["0", "1"], UNNAMED_GPU)
        assert "the slots are CUDA_VISIBLE_DEVICES's entries, named 'gpu'" in warning


@pytest.mark.skipif(not os.access(FREEZER, os.W_OK), reason="no cgroup v1 freezer this user may write")
def test_a_listing_kill_cannot_end_does_not_hold_up_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A hung driver holds nvidia-smi in uninterruptible sleep, where the KILL sent on its timeout
    does not land: the start KILLed it and then waited for it to end, for ever, not 10 s. It is
    KILLed and not waited for (here frozen, so the start would not return), and one line says so."""
    # the stand-in freezes itself at its first command, well within the timeout
    monkeypatch.setattr(gpus, "SMI_TIMEOUT_S", 2.0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    planned: list[FleetPlan] = []
    with freezer_cgroup() as group, caplog.at_level(logging.WARNING, logger="autoresearch"):
        (group / "freezer.state").write_text("FROZEN")
        stand_in_nvidia_smi(tmp_path, monkeypatch, [], [], frozen_in=group)
        start = threading.Thread(target=lambda: planned.append(plan_fleet(local_cluster())), daemon=True)
        start.start()
        start.join(60)
        assert not start.is_alive(), "the start waited for an nvidia-smi KILL cannot end"
        smi = int((tmp_path / "smi.pid").read_text())
        assert state_of(smi) == "D"  # (the KILL met it frozen: not ended before it froze)
    wait_for(lambda: not Path(f"/proc/{smi}").exists(), 60, "the thawed nvidia-smi to be reaped")
    assert (planned[0].gpus, planned[0].pools["local"].gpu_type) == ([], "cpu")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "nvidia-smi -L did not answer in 2 s" in warning


def test_a_gpu_in_mig_mode_the_query_stands_in_for_is_one_slot_named_apart_from_the_whole_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`-L` not understood on an A100 in MIG mode: `--query-gpu` said so (mig.mode.current, read)
    and was not heard, so the runs on one of its slices were named the whole A100, and a resume on
    a whole A100 compared them; it is one slot, by index, named '<GPU> MIG', its profile not known."""
    stand_in_nvidia_smi(
        tmp_path,
        monkeypatch,
        [f"Device 0 [{MIG_A100}] uuid={MIG_A100_UUID}"],
        [f"0, {MIG_A100_UUID}, Enabled, {MIG_A100}"],
    )
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        plan = plan_fleet(local_cluster(), require_gpu=True)
    assert (plan.gpus, plan.pools["local"].slots, plan.pools["local"].gpu_type) == (
        ["0"],
        1,
        f"{MIG_A100} MIG",
    )
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "MIG mode one" in warning and "profile not known" in warning and "\n" not in warning


@pytest.mark.parametrize("visible", [None, "0"], ids=["all-listed", "cuda-visible-devices"])
def test_a_mig_slice_read_by_the_listing_and_by_the_query_is_the_same_hardware_to_a_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, visible: str | None
) -> None:
    """A start where `-L` worked named an A100's slice '<GPU> MIG 1g.5gb'; a resume where it failed
    (the query standing in) named it '<GPU> MIG', and was refused as other hardware, either way
    round. The profile not read is any slice of its GPU; a whole GPU or another profile is not."""
    set_visible_devices(monkeypatch, visible)
    slices = [f"  MIG 1g.5gb      Device  {i}: (UUID: {uuid})" for i, uuid in enumerate(SLICES)]
    queried = [f"0, {MIG_A100_UUID}, Enabled, {MIG_A100}"]
    stand_in_nvidia_smi(
        tmp_path, monkeypatch, [f"GPU 0: {MIG_A100} (UUID: {MIG_A100_UUID})", *slices], queried
    )
    listed = plan_fleet(local_cluster()).pools["local"]
    stand_in_nvidia_smi(tmp_path, monkeypatch, [], queried, listing_fails="Insufficient Permissions")
    queried_only = plan_fleet(local_cluster()).pools["local"]
    assert (hardware_of(listed), hardware_of(queried_only)) == (SLICE, f"{MIG_A100} MIG")
    for before, now in [(listed, queried_only), (queried_only, listed)]:
        assert resume_refusals(hardware_of(before), now) == []
    assert resume_refusals(hardware_of(queried_only), Pool("local", 1, MIG_A100))
    assert resume_refusals(SLICE, Pool("local", 1, f"{MIG_A100} MIG 3g.20gb"))


def resume_refusals(measured_on: str, now: Pool) -> list[str]:
    """Why a resume on `now` is refused to a screen tier that measured on `measured_on`."""
    study = optuna.create_study()
    trial = study.ask()
    trial.set_user_attr(HARDWARE_ATTR, measured_on)
    trial.set_user_attr("val_bpb", 1.0)
    study.tell(trial, 1.0)
    return hardware_changes(study.trials, {"screen": "local"}, {"local": now}, "runs/x")
