"""The README's ``tensorboard --logdir RUN/tb`` starts and serves what training wrote.

A tiny real training writes RUN/tb; the venv's real ``tensorboard`` binary serves it on a free
loopback port, and its HTTP API must list the run, every scalar the README documents and the
image panels. Every wait is bounded; the server is stopped whatever happens.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fitsae.train.loop import train
from fitsae.train.memory import ArrayData
from train_helpers import blobs, tiny_config

pytestmark = pytest.mark.slow

TENSORBOARD = Path(sys.executable).parent / "tensorboard"
# README, "Training": the scalars rank 0 writes (mse_eta/AAA-BBB checked by prefix).
DOCUMENTED_SCALARS = ("mse", "nll", "eta", "lr/primary", "lr/variance", "perf/images_per_sec")


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(opener, url: str):
    with opener.open(url, timeout=5) as response:
        return json.loads(response.read().decode())


def test_tensorboard_serves_the_documented_scalars_and_images(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(train={"steps": 10, "log_every": 5, "image_every": 10, "export": False})
    assert train(cfg, run, data=ArrayData(blobs(32, 16), 8)).exit_code == 0

    port = _free_loopback_port()
    base = f"http://127.0.0.1:{port}"
    # Loopback only: no proxy from the environment may be asked for 127.0.0.1.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    log = tmp_path / "tensorboard.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(TENSORBOARD), "--logdir", str(run / "tb"), "--host", "127.0.0.1",
                                   "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        runs, scalars, images = [], {}, {}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert server.poll() is None, f"tensorboard exited {server.returncode}:\n{log.read_text()}"
            try:
                runs = _get(opener, f"{base}/data/runs")
                scalars = _get(opener, f"{base}/data/plugin/scalars/tags")
                images = _get(opener, f"{base}/data/plugin/images/tags")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet
            if runs and any(scalars.values()) and any(images.values()):
                break
            time.sleep(1)
        assert runs == ["."], runs  # the event files sit directly in RUN/tb
        tags = set(scalars["."])
        assert set(DOCUMENTED_SCALARS) <= tags, sorted(tags)
        assert any(tag.startswith("mse_eta/") for tag in tags), sorted(tags)
        assert sorted(images["."]) == ["images/eta_001", "images/eta_002", "images/eta_004"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
