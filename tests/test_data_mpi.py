"""Under real ``mpirun -np 2``: split indexing, disjoint equal shards covering the data, every epoch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from fitsae.data.config import DataConfig
from fitsae.data.manifest import Manifest, index_paths
from data_helpers import gaussian_field

WORKER = Path(__file__).with_name("data_mpi_worker.py")


@pytest.mark.mpi
def test_two_ranks_shard_disjointly_and_cover_the_dataset(tmp_path, mpirun):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        fits.PrimaryHDU(gaussian_field(rng, (16, 16))).writeto(data / f"im{i:02d}.fits")
    fits.PrimaryHDU(np.stack([gaussian_field(rng, (16, 16)) for _ in range(4)])).writeto(data / "cube.fits")
    (data / "broken.fits").write_text("not fits")
    out = tmp_path / "out"
    out.mkdir()

    result = mpirun(2, [str(Path(__import__("sys").executable)), str(WORKER), str(data), str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    # Indexing split over two ranks gives exactly the single-process manifest.
    single, rejected = index_paths([str(data)], DataConfig(tile=16))
    assert Manifest.load(out / "mpi.jsonl") == single and len(single) == 16
    assert [json.loads(line)["path"] for line in (out / "mpi.rejected.jsonl").read_text().splitlines()] == \
        [r["path"] for r in rejected] == [str(data / "broken.fits")]

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["index_exit"] for r in ranks] == [0, 0]
    # 16 tiles, batch 2 x 2 ranks: no remainder, the union of the shards is the whole dataset.
    # Batch 3: 12 of 16 used per epoch (rule: drop the remainder), still disjoint and equal.
    for key, used in (("b2", 16), ("b3", 12)):
        a, b = ranks[0][key], ranks[1][key]
        assert a["steps_per_epoch"] == b["steps_per_epoch"] == 16 // (2 * int(key[1]))
        epochs = []
        for ea, eb in zip(a["epochs"], b["epochs"], strict=True):
            assert len(ea) == len(eb) == used // 2
            assert not set(ea) & set(eb)
            assert len(set(ea) | set(eb)) == used
            epochs.append((ea, eb))
        assert epochs[0] != epochs[1] != epochs[2]  # reshuffled every epoch
        if used == 16:
            assert all(set(ea) | set(eb) == set(range(16)) for ea, eb in epochs)
        # Evaluation: every tile exactly once over the ranks.
        assert sorted(a["eval"] + b["eval"]) == list(range(16))


_SEES_OTHER_FILES = """
import json, os, sys
from fitsae import distributed
from fitsae.data.config import DataConfig
from fitsae.data.manifest import index_paths
distributed.init_workers()
comm = distributed.comm()
os.chdir(f"rank{comm.Get_rank()}")
manifest, rejected = index_paths(["data"], DataConfig(tile=16), comm)
with open(f"../out{comm.Get_rank()}.json", "w") as f:
    json.dump({"paths": [row.path for row in manifest], "rejected": rejected}, f)
"""


@pytest.mark.mpi
def test_every_rank_indexes_the_files_rank_0_found(tmp_path, mpirun):
    # Each rank resolves "data" in its own working directory, where rank 1 sees one file fewer:
    # a stand-in for files appearing while a job starts. The job indexes rank 0's list.
    rng = np.random.default_rng(0)
    for rank, count in ((0, 3), (1, 2)):
        (tmp_path / f"rank{rank}" / "data").mkdir(parents=True)
        for i in range(count):
            fits.PrimaryHDU(gaussian_field(rng, (16, 16))).writeto(tmp_path / f"rank{rank}" / "data" / f"im{i}.fits")
    result = mpirun(2, [sys.executable, "-c", _SEES_OTHER_FILES], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    expected = [str(tmp_path / "rank0" / "data" / f"im{i}.fits") for i in range(3)]
    for rank in range(2):
        assert json.loads((tmp_path / f"out{rank}.json").read_text()) == {"paths": expected, "rejected": []}
