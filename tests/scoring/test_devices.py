"""Device parsing and file division for multi-device scoring (the runs themselves: test_run.py)."""

from __future__ import annotations

import pytest
import torch

from allsides_batch.config import ScoreConfig
from allsides_batch.errors import UserError
from allsides_batch.scoring.device_processes import divide_files, parse_devices


def _cfg(**kw) -> ScoreConfig:
    return ScoreConfig(model="m", input=["i"], output="o", **kw)


def test_parse_devices():
    assert parse_devices(_cfg()) == ["auto"]
    assert parse_devices(_cfg(devices="cpu:3")) == ["cpu", "cpu", "cpu"]
    with pytest.raises(UserError, match="cpu:N"):
        parse_devices(_cfg(devices="cpu:0"))
    with pytest.raises(UserError, match="not cpu or cuda"):
        parse_devices(_cfg(devices="tpu:0"))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            parse_devices(_cfg(devices="all"))


def test_divide_files_balances_bytes_and_keeps_every_file(tmp_path):
    files = []
    for i, size in enumerate([900, 100, 100, 500, 400, 50]):
        path = tmp_path / f"f{i}.parquet"
        path.write_bytes(b"x" * size)
        files.append(str(path))
    shares = divide_files(files, 2)
    assert sorted(f for s in shares for f in s) == sorted(files)
    loads = [sum((tmp_path / f).stat().st_size for f in s) for s in shares]
    assert max(loads) - min(loads) <= 100
    assert divide_files(files[:1], 3)[1:] == [[], []]
