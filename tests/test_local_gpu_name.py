"""A local fleet names the model of the GPUs this process may use (`factory.gpu_name`).

The machine the tests run on has no GPU: the one stand-in is an `nvidia-smi` script first on PATH
that prints what the real one prints for a machine of two models."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from engine_helpers import make_fleet

from autoresearch.config import ClusterConfig, PartitionConfig

A100 = "NVIDIA A100-SXM4-80GB"
H100 = "NVIDIA H100 80GB HBM3"
GPUS = [  # index, uuid, name: as `nvidia-smi --query-gpu=index,uuid,name --format=csv,noheader`
    ("0", "GPU-1b2c3d4e-0000-1111-2222-333344445555", A100),
    ("1", "GPU-8f2c9a01-6666-7777-8888-99990000aaaa", H100),
]


@pytest.fixture
def mixed_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An A100 listed first and an H100, as nvidia-smi lists them for each query this code makes."""
    lines = {
        "index": [index for index, _, _ in GPUS],
        "name": [name for _, _, name in GPUS],
        "index,uuid,name": [", ".join(gpu) for gpu in GPUS],
    }
    cases = "".join(
        f"  --query-gpu={q}) printf '%s\\n' {' '.join(repr(x) for x in out)};;\n" for q, out in lines.items()
    )
    script = tmp_path / "nvidia-smi"
    script.write_text(f'#!/bin/sh\ncase "$1" in\n{cases}  *) exit 2;;\nesac\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def local_gpu_type() -> str:
    fleet = make_fleet(
        ClusterConfig(partitions={"local": PartitionConfig(gpu_type="auto")}), deadline_s=60, campaign_dir=""
    )
    return fleet.pools["local"].gpu_type


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
