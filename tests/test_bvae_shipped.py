"""The shipped β-VAE config (train/bvae.yaml, conv) trades bits for fidelity over the README's grid."""

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_logbetas() -> str:
    """The log β grid the README tells users to evaluate a β-VAE on (``--logbetas=…``)."""
    (grid,) = set(re.findall(r"--logbetas=([-0-9.,]+)", (REPO / "README.md").read_text()))
    return grid


@pytest.fixture(scope="module")
def shipped_rd(tmp_path_factory):
    """Toy 64×64 fields → `fitsae train --config train/bvae.yaml` (only size and steps changed) →
    `fitsae evaluate --logbetas=<README grid>`; returns the report rows."""
    from fitsae.cli import evaluate as evaluate_cli
    from fitsae.cli import simulate as simulate_cli
    from fitsae.cli import train as train_cli

    base = tmp_path_factory.mktemp("bvae_shipped")
    for name, n, seed in (("train", 64, 1), ("test", 16, 2)):
        assert simulate_cli.main(["--kind", "toy", "--n", str(n), "--size", "64", "--out", str(base / name),
                                  "--seed", str(seed)]) == 0
    run, steps = base / "run", 1200
    assert train_cli.main([
        "--config", str(REPO / "train" / "bvae.yaml"), "--run-dir", str(run),
        "--set", f"data.paths=[{base / 'train'}]", "--set", "data.tile=64", "--set", f"train.steps={steps}",
        "--set", f"train.checkpoint_every={steps}", "--set", "train.image_every=0", "--set", "train.export=false",
    ]) == 0
    out = base / "eval"
    assert evaluate_cli.main(["--run-dir", str(run), "--data", str(base / "test"), "--out", str(out),
                              f"--logbetas={readme_logbetas()}", "--no-tensorboard"]) == 0
    return json.loads((out / "bvae_rd.json").read_text())["results"]


@pytest.mark.slow
def test_shipped_bvae_rate_falls_and_distortion_rises_over_the_readme_grid(shipped_rd):
    for r in shipped_rd:
        print(f"log β {r['logbeta']:+.1f}: KL {r['bits_per_pixel']:.4f} coded {r['coded']['bits_per_pixel_coded']:.4f} "
              f"bits/px, RMSE/σ {r['rmse_over_noise']:.3f} (coded {r['coded']['rmse_over_noise']:.3f})")
    assert [r["logbeta"] for r in shipped_rd] == [float(v) for v in readme_logbetas().split(",")]
    rate = [r["bits_per_pixel"] for r in shipped_rd]
    coded = [r["coded"]["bits_per_pixel_coded"] for r in shipped_rd]
    error = [r["rmse_over_noise"] for r in shipped_rd]
    assert all(a > b for a, b in zip(rate, rate[1:])), rate
    assert all(a >= b for a, b in zip(coded, coded[1:])), coded
    assert all(a <= b for a, b in zip(error, error[1:])), error
    assert error[-1] >= 1.1 * error[0], error
