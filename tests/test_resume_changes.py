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
    """The campaign's config.yaml as a start with these overrides wrote it (less the top-level
    setting `drop`, as a version before it wrote it)."""
    saved = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(compose_toy(tmp_path, *overrides))))
    if drop:
        del saved[drop]
    path = tmp_path / "config.yaml"
    path.write_text(OmegaConf.to_yaml(saved))
    return path


def test_a_setting_the_older_version_that_wrote_config_yaml_lacked_is_no_change(tmp_path: Path) -> None:
    saved = _saved(tmp_path, drop="storage_retry_seconds")
    assert setting_changes(saved, compose_toy(tmp_path)) == []
    assert setting_changes(saved, compose_toy(tmp_path, "campaign.wave_size=6")) == [
        "campaign.wave_size: 4 -> 6"
    ]


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
