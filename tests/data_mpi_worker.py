"""Run by ``mpirun -np N`` from test_data_mpi.py: index under MPI, then record each rank's tiles.

Usage: python data_mpi_worker.py DATA_DIR OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fitsae import distributed
from fitsae.cli import index as index_cli
from fitsae.data.config import DataConfig
from fitsae.data.manifest import Manifest
from fitsae.data.pipeline import Pipeline

EPOCHS = 3


def main(data_dir: str, out_dir: str) -> int:
    w = distributed.init_workers()
    out = Path(out_dir)
    manifest_path = out / "mpi.jsonl"
    code = index_cli.main([data_dir, "--out", str(manifest_path), "--tile", "16"])
    distributed.comm().Barrier()  # rank 0 wrote the manifest
    manifest = Manifest.load(manifest_path)
    record = {"rank": w.rank, "size": w.size, "index_exit": code}
    for batch_size in (2, 3):
        pipe = Pipeline(manifest, DataConfig(tile=16, batch_size=batch_size), seed=11, rank=w.rank, size=w.size)
        steps = pipe.steps_per_epoch
        batches = [b["tile_id"].numpy().tolist() for b in pipe.training(0).take(EPOCHS * steps)]
        record[f"b{batch_size}"] = {
            "steps_per_epoch": steps, "n_tiles": pipe.n_tiles,
            "epochs": [sum(batches[e * steps:(e + 1) * steps], []) for e in range(EPOCHS)],
            "eval": sum((b["tile_id"].numpy().tolist() for b in pipe.evaluation(3)), []),
        }
    (out / f"rank{w.rank}.json").write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
