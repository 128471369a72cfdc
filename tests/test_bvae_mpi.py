"""β-VAE rate–distortion under ``mpirun -np 2``: each rank fits and scores half the tiles, the rows are exact."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    import numpy as np
    import tensorflow as tf
    from bvae_helpers import dense_config, toy_images
    from fitsae import distributed
    from fitsae.evaluate.bvae_coding import fit_operating_points
    from fitsae.evaluate.bvae_rd import rate_distortion
    from fitsae.models.bvae import BetaVAE

    w = distributed.init_workers()
    tf.keras.utils.set_random_seed(0)  # same weights on every rank and in the single-process run
    model = BetaVAE(dense_config(latent=4, hidden=(16,)), (8, 8, 1))
    images = toy_images(40, 8, seed=9)
    batches = [{{"x": images[i:i + 8], "noise": np.ones(8, np.float32)}} for i in range(0, 40, 8)]
    mine = batches[w.rank::w.size]  # 5 batches: ranks get 3 and 2, an uneven split on purpose
    training = toy_images(24, 8, seed=10)
    fit = [{{"x": training[i:i + 8], "noise": np.ones(8, np.float32)}} for i in range(0, 24, 8)][w.rank::w.size]
    points = fit_operating_points(model, fit, [-1.0, 0.0, 1.0], crop=lambda x: x)
    rows = rate_distortion(model, mine, [-1.0, 0.0, 1.0], points=points)
    with open(sys.argv[1] + f".{{w.rank}}", "w") as fh:
        json.dump({{"size": w.size, "rows": rows}}, fh)
    """
)


@pytest.mark.mpi
def test_rate_distortion_over_two_ranks_equals_one_process(tmp_path, mpirun):
    script = tmp_path / "rd.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single")], capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    proc = mpirun(2, [sys.executable, str(script), str(tmp_path / "mpi")])
    assert proc.returncode == 0, proc.stderr[-3000:]

    reference = json.loads((tmp_path / "single.0").read_text())
    assert reference["size"] == 1
    ranks = [json.loads((tmp_path / f"mpi.{r}").read_text()) for r in (0, 1)]
    assert [r["size"] for r in ranks] == [2, 2]
    assert ranks[0]["rows"] == ranks[1]["rows"]  # every rank returns the reduced rows
    for got, want in zip(ranks[0]["rows"], reference["rows"], strict=True):
        assert got["n_images"] == want["n_images"] == 40
        for key in ("rate_nats_per_image", "bits_per_pixel", "mse", "rmse_over_noise"):
            assert got[key] == pytest.approx(want[key], rel=1e-6), key
        for key in ("mse", "nll", "sigma_z_std", "coverage_1sigma"):
            assert got["mean_z"][key] == pytest.approx(want["mean_z"][key], rel=1e-6), key
        # the quantization fitted on two halves of the training tiles is the one fitted on all
        assert got["coded"]["steps"] == pytest.approx(want["coded"]["steps"], rel=1e-12)
        assert got["coded"]["bits_per_pixel_coded"] == want["coded"]["bits_per_pixel_coded"]
        assert got["coded"]["rmse_over_noise"] == pytest.approx(want["coded"]["rmse_over_noise"], rel=1e-6)
