"""The settings a resume changes, as its log says them (`setting_changes`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_helpers import REPO, compose_toy
from omegaconf import OmegaConf

from autoresearch.resume_changes import setting_changes


@pytest.fixture(autouse=True)
def _from_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # campaign paths are relative to the folder a command runs in


def _saved(tmp_path: Path, *overrides: str, drop: str = "") -> Path:
    """The campaign's config.yaml as a start with these overrides wrote it (less the setting
    `drop`, a dotted path: as a version before it, or a start without that knob, wrote it)."""
    saved = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(compose_toy(tmp_path, *overrides))))
    if drop:
        parent, _, key = drop.rpartition(".")
        del (OmegaConf.select(saved, parent) if parent else saved)[key]
    path = tmp_path / "config.yaml"
    path.write_text(OmegaConf.to_yaml(saved))
    return path


def test_a_setting_the_older_version_that_wrote_config_yaml_lacked_is_no_change(tmp_path: Path) -> None:
    saved = _saved(tmp_path, drop="storage_retry_seconds")
    assert setting_changes(saved, compose_toy(tmp_path)) == []
    assert setting_changes(saved, compose_toy(tmp_path, "campaign.wave_size=6")) == [
        "campaign.wave_size: 4 -> 6"
    ]


def test_a_knob_added_since_the_last_start_is_a_change(tmp_path: Path) -> None:
    """Only settings config.yaml had were compared, so a knob added since went unsaid (the dry run
    said "none since its last start"). A field an older version lacked is still no change."""
    assert setting_changes(_saved(tmp_path, drop="campaign.knobs.LR.log"), compose_toy(tmp_path)) == []
    assert setting_changes(_saved(tmp_path, drop="campaign.knobs.LR"), compose_toy(tmp_path)) == [
        "campaign.knobs.LR: added, {'kind': 'float', 'low': 0.001, 'high': 0.5, 'log': True, 'choices': []}"
    ]


def test_a_partition_renamed_since_the_last_start_is_two_changes_not_one_per_field(tmp_path: Path) -> None:
    """A resume onto a cluster file whose partition has another name listed each of the 17
    fields of both, 34 changes in one line; it is the one removed and the other added."""
    saved = _saved(tmp_path, "cluster=slurm")
    now = compose_toy(tmp_path, "cluster=slurm_local", "cluster.partitions.h100.slots=13")
    assert setting_changes(saved, now) == [
        "cluster.grace_seconds: 300.0 -> 120.0",
        "cluster.max_queued: 64 -> 16",
        "cluster.partitions.h100.cpus_per_task: 16 -> 1",
        "cluster.partitions.h100.mem_gb: 120.0 -> 0.0",
        "cluster.partitions.h100.price_per_gpu_hour: 2.5 -> 0.0",
        "cluster.partitions.h100.time_limit_min: 60 -> 30",
        "cluster.partitions.h200.cpus_per_task: 16 -> 1",
        "cluster.partitions.h200.mem_gb: 120.0 -> 0.0",
        "cluster.partitions.h200.price_per_gpu_hour: 3.5 -> 0.0",
        "cluster.partitions.h200.slots: 3 -> 1",
        "cluster.partitions.h200.time_limit_min: 60 -> 30",
        "cluster.poll_seconds: 5.0 -> 0.5",
    ]
    saved = _saved(tmp_path)
    renamed = setting_changes(saved, compose_toy(tmp_path, "cluster=slurm_local", "cluster.max_queued=256"))
    assert [change.split(",")[0] for change in renamed] == [
        "cluster.kind: 'local' -> 'slurm'",
        "cluster.partitions.h100: added",
        "cluster.partitions.h200: added",
        "cluster.partitions.local: removed",
        "cluster.poll_seconds: 1.0 -> 0.5",
        "cluster.tiers.screen: 'local' -> 'h100'",
        "cluster.tiers.validate: 'local' -> 'h200'",
    ]
    assert renamed[1].startswith("cluster.partitions.h100: added, {'slots': 2, 'gpu_type': 'h100', ")


def test_a_secret_in_a_saved_setting_is_never_shown(tmp_path: Path) -> None:
    """config.yaml may hold what the check now refuses (an older version's, a hand edit): a storage
    password, a key as a base URL's user, a token in a setup line."""
    saved = _saved(
        tmp_path,
        "storage=postgresql://ana:s3cret@db.example/study",
        "agent.base_url=https://s3cret@gateway.example",
        "cluster.partitions.local.setup=['export HF_TOKEN=s3cret']",
    )
    changes = setting_changes(saved, compose_toy(tmp_path, "storage=postgresql://ana@db.example/study"))
    assert changes == [
        "agent.base_url: (not shown: it may hold a secret) -> None",
        "cluster.partitions.local.setup: (not shown: it may hold a secret) -> []",
        "storage: 'postgresql://ana:***@db.example/study' -> 'postgresql://ana@db.example/study'",
    ]


def test_a_path_spelled_another_way_for_the_same_place_is_no_change(tmp_path: Path) -> None:
    """`runs_dir=runs` at the start and the same folder spelled in full at the resume (or
    `./trainer/train.py`, a submitit folder by its full path) were logged as settings changed."""
    relative = ["runs_dir=runs", "campaign.train_py=trainer/train.py", "cluster.submitit_dir=submitit"]
    saved = _saved(tmp_path, *relative)
    same_places = compose_toy(
        tmp_path,
        f"runs_dir={REPO.resolve() / 'runs'}",
        "campaign.train_py=./trainer/../trainer/train.py",
        f"cluster.submitit_dir={tmp_path / 'submitit'}",  # (in the campaign folder, config.yaml's)
    )
    assert setting_changes(saved, same_places) == []
    elsewhere = compose_toy(
        tmp_path, *relative[1:], "runs_dir=other/runs"
    )  # (runs_dir as compose_toy sets it)
    assert setting_changes(saved, elsewhere) == ["runs_dir: 'runs' -> 'other/runs'"]
