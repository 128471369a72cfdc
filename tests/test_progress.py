"""Progress lines with an ETA: the arithmetic, and where evaluation and training print them."""

from __future__ import annotations

import logging

import pytest

from fitsae.progress import Progress, eta_seconds, format_duration


@pytest.fixture
def fitsae_log():
    """Messages of the ``fitsae`` logger (INFO and up) while the test runs."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger = logging.getLogger("fitsae")
    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_durations_read_like_a_clock():
    assert [format_duration(s) for s in (0, 59.4, 60, 185, 2 * 3600 + 7 * 60 + 20)] == \
        ["0s", "59s", "1m00s", "3m05s", "2h07m"]


def test_eta_is_the_rest_at_the_average_rate():
    assert eta_seconds(25, 100, 10.0) == 30.0
    assert eta_seconds(0, 100, 10.0) is None and eta_seconds(100, 100, 10.0) == 0.0


def test_lines_say_done_total_percent_elapsed_and_eta():
    progress = Progress("scoring test tiles", 4)
    progress.done = 1
    assert progress.line(10.0) == "scoring test tiles: 1/4 tiles (25%), 10s, ETA 30s"
    progress.done = 4
    assert progress.line(40.0) == "scoring test tiles: 4/4 tiles (100%), 40s"


def test_quick_work_stays_silent_and_slow_work_is_reported(monkeypatch, fitsae_log):
    quick = Progress("quick", 3)
    for _ in range(3):
        quick.advance()
    quick.finish()
    assert fitsae_log == []  # well under the default 10 s between lines
    monkeypatch.setenv("FITSAE_PROGRESS_SECONDS", "0")
    slow = Progress("slow", 2)
    slow.advance()
    slow.advance()
    slow.finish()
    assert [m.split(",")[0] for m in fitsae_log] == ["slow: 1/2 tiles (50%)", "slow: 2/2 tiles (100%)", "slow: 2 tiles in 0s"]
    assert "ETA" in fitsae_log[0] and "ETA" not in fitsae_log[1]


def test_training_lines_carry_an_eta_until_the_last_step(tmp_path, fitsae_log):
    from fitsae.train.loop import train
    from fitsae.train.memory import ArrayData
    from train_helpers import blobs, tiny_config

    cfg = tiny_config(train={"steps": 15, "log_every": 5, "image_every": 0, "export": False, "progress": True})
    assert train(cfg, tmp_path / "run", data=ArrayData(blobs(32, 16), 8)).exit_code == 0
    steps = [m for m in fitsae_log if m.startswith("step ")]
    assert [m.split()[1] for m in steps] == ["5/15", "10/15", "15/15"]
    assert ["ETA " in m for m in steps] == [True, True, False], steps


@pytest.mark.slow
def test_evaluation_reports_progress_on_each_pass(tmp_path_factory, monkeypatch, fitsae_log):
    from eval_helpers import CONV, shared_run
    from fitsae.cli import main

    run = shared_run(tmp_path_factory, "conv", CONV)
    monkeypatch.setenv("FITSAE_PROGRESS_SECONDS", "0")
    code = main(["evaluate", "--run-dir", str(run["run"]), "--data", str(run["test"]), "--out",
                 str(tmp_path_factory.mktemp("progress") / "eval"), "--fpack-tiles", "4", "--etas", "1,4",
                 "--no-plots", "--no-tensorboard"])
    assert code == 0
    scoring = [m for m in fitsae_log if m.startswith("scoring test tiles: ")]
    # 12 test tiles in batches of 8: a line after each batch, then the closing one.
    assert [m.split(",")[0] for m in scoring] == ["scoring test tiles: 8/12 tiles (67%)",
                                                 "scoring test tiles: 12/12 tiles (100%)",
                                                 "scoring test tiles: 12 tiles in " + scoring[2].split(" in ")[1]]
    assert "ETA" in scoring[0]
    assert any(m.startswith("PCA fit on training tiles: ") for m in fitsae_log)
    assert any(m.startswith("baselines on test tiles: 4/4 tiles (100%)") for m in fitsae_log)
