"""fitsae.distributed under a real ``mpirun -np 2`` (Open MPI + Horovod) and as a plain process."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

TWO_OPTIMIZERS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from fitsae import distributed

    w = distributed.init_workers()
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(1000 + w.rank)  # every rank starts from its own random init
    encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh")])
    mean_head = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    var_head = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    primary = encoder.trainable_variables + mean_head.trainable_variables
    variance = var_head.trainable_variables
    opt1, opt2 = keras.optimizers.Adam(1e-2), keras.optimizers.Adam(1e-2)
    opt1.build(primary)
    opt2.build(variance)
    initial = np.concatenate([v.numpy().ravel() for v in encoder.variables])

    # Different data (and amounts of it) on each rank: only averaged gradients keep weights equal.
    rng = np.random.default_rng(w.rank)
    data = rng.normal(size=(16 * (w.rank + 1), 4)).astype("float32")

    distributed.broadcast(encoder, mean_head, var_head, opt1, opt2)

    # Horovod must average the ranks' gradients, not sum them: compare with each rank's own.
    x0 = tf.constant(data[:16])
    with tf.GradientTape(persistent=True) as tape:
        mse0 = tf.reduce_mean((x0 - mean_head(encoder(x0))) ** 2)
    own = [g.numpy() for g in tape.gradient(mse0, [v.value for v in primary])]
    combined = [g.numpy() for g in distributed.gradient(tape, mse0, primary)]
    all_own = distributed.comm().allgather(own)
    mean_error = max(float(np.max(np.abs(c - np.mean([o[i] for o in all_own], axis=0))))
                     for i, c in enumerate(combined))
    sum_error = max(float(np.max(np.abs(c - np.sum([o[i] for o in all_own], axis=0))))
                    for i, c in enumerate(combined))
    scale = max(float(np.max(np.abs(c))) for c in combined)

    @tf.function
    def step(x):
        with tf.GradientTape(persistent=True) as tape:
            z = encoder(x)
            mu = mean_head(z)
            mse = tf.reduce_mean((x - mu) ** 2)
            s = var_head(tf.stop_gradient(z))
            nll = tf.reduce_mean(0.5 * (s + (x - tf.stop_gradient(mu)) ** 2 * tf.exp(-s)))
        opt1.apply_gradients(zip(distributed.gradient(tape, mse, primary), primary))
        opt2.apply_gradients(zip(distributed.gradient(tape, nll, variance), variance))
        return mse

    for i in range(25):
        step(tf.constant(data[(i % 2) * 16:(i % 2) * 16 + 16]))

    final = b"".join(v.numpy().tobytes() for m in (encoder, mean_head, var_head) for v in m.variables)
    final += b"".join(np.asarray(v.numpy()).tobytes() for v in opt1.variables + opt2.variables)
    errors = ((data - mean_head(encoder(data)).numpy()) ** 2).astype(np.float64)
    local = np.array([errors.sum(), errors.size], dtype=np.float64)
    reduced = distributed.allreduce_sum(local)
    everything = distributed.comm().allgather((initial.tobytes(), final, errors.ravel().tolist()))
    if w.is_root:
        all_errors = np.concatenate([np.asarray(e[2], dtype=np.float64) for e in everything])
        json.dump({
            "size": w.size,
            "backend": w.backend,
            "initial_differ": everything[0][0] != everything[1][0],
            "final_identical": all(e[1] == everything[0][1] for e in everything),
            "reduced_sum": float(reduced[0]), "reduced_count": float(reduced[1]),
            "exact_sum": float(all_errors.sum()), "exact_count": float(all_errors.size),
            "mean_of_means": float(np.mean([np.mean(e[2]) for e in everything])),
            "gradient_vs_mean": mean_error / scale, "gradient_vs_sum": sum_error / scale,
        }, open(sys.argv[1], "w"))
    """
)


@pytest.mark.mpi
def test_two_ranks_two_optimizers_end_identical_and_metrics_exact(tmp_path, mpirun):
    script = tmp_path / "two_optimizers.py"
    script.write_text(TWO_OPTIMIZERS)
    out = tmp_path / "result.json"
    proc = mpirun(2, [sys.executable, str(script), str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["size"] == 2 and result["backend"] == "horovod"
    assert result["initial_differ"], "ranks should start from different random weights"
    assert result["final_identical"], "weights and optimizer slots must be byte-identical after training"
    assert result["reduced_count"] == result["exact_count"] == (16 + 32) * 4
    assert result["reduced_sum"] == pytest.approx(result["exact_sum"], rel=1e-12)
    # The gradient each rank applies is the mean of the ranks' own gradients (a sum would also
    # keep the ranks identical, at twice the step).
    assert result["gradient_vs_mean"] < 1e-6 and result["gradient_vs_sum"] > 0.1
    # The shards differ in size, so a mean of per-rank means is not the global mean.
    assert result["reduced_sum"] / result["reduced_count"] != pytest.approx(result["mean_of_means"], rel=1e-6)


def _python(code: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX", "PMI_", "SLURM_"))}
    clean.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, timeout=300)


def test_single_process_never_imports_horovod():
    proc = _python(
        "import sys; from fitsae import distributed as d; w = d.init_workers(configure_tensorflow=False);"
        "print(w.rank, w.size, w.local_rank, w.local_size, w.backend);"
        "print('horovod' in sys.modules, 'mpi4py' in sys.modules);"
        "print(d.allreduce_sum([1.5, 2]).tolist(), d.allreduce_max(3), d.comm().allgather('x'))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["0 1 0 1 single", "False False", "[1.5, 2.0] 3.0 ['x']"]


def test_srun_without_mpi_process_manager_is_refused():
    proc = _python(
        "from fitsae import distributed as d; d.init_workers(configure_tensorflow=False)",
        SLURM_NTASKS="2", SLURM_PROCID="1", SLURM_STEP_ID="0",
    )
    assert proc.returncode != 0
    assert "srun --mpi=pmix" in proc.stderr


def test_doctor_without_mpi_reports_one_rank():
    proc = _python("from fitsae.cli import main; raise SystemExit(main(['doctor']))")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mpi_built=True" in proc.stdout
    assert "ranks" in proc.stdout and "1 (backend single" in proc.stdout
    assert "doctor: OK" in proc.stdout


@pytest.mark.mpi
def test_doctor_under_mpirun_sees_two_ranks(mpirun):
    proc = mpirun(2, [sys.executable, "-m", "fitsae", "doctor"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mpi_enabled=True" in proc.stdout
    assert "2 (backend horovod" in proc.stdout
    assert proc.stdout.count("doctor: OK") == 1, "only rank 0 prints"


def test_log_lines_go_to_the_stderr_of_their_time(monkeypatch):
    """Logging set up under one ``sys.stderr`` (a pytest capture, closed when its test ends) writes
    each later line to the ``sys.stderr`` of that moment, not to the closed stream."""
    import io
    import logging
    import re

    from fitsae import distributed

    logger = logging.getLogger("fitsae")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", logger.propagate)
    monkeypatch.setattr(logger, "level", logger.level)
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    distributed._configure_logging(distributed.Workers(rank=0, size=1, local_rank=0, local_size=1, backend="single"))
    logger.info("before the swap")
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    logger.info("after the swap")
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO after the swap\n", second.getvalue()), second.getvalue()
