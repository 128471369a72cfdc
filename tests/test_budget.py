"""The budget choice: at budget η each item keeps the η′ ≤ η with the smallest error."""

from __future__ import annotations

import numpy as np
import pytest

from fitsae.budget import RunningBest


def test_running_best_keeps_each_items_smallest_error_and_its_arrays():
    errors = {1: [5.0, 1.0, 3.0], 2: [4.0, 2.0, 3.0], 3: [6.0, 0.5, 1.0]}
    best = RunningBest()
    seen = []
    for eta, err in errors.items():
        mu = np.full((3, 2, 2), float(eta))  # each η′'s "reconstruction" is filled with η′
        best.offer(eta, err, mu)
        seen.append((best.eta.tolist(), best.error.tolist(), best.arrays[0][:, 0, 0].tolist()))
    # item 0 improves at η′=2; item 1 at η′=3 only; item 2 ties at η′=2 (keeps η′=1), improves at 3
    assert seen[1] == ([2, 1, 1], [4.0, 1.0, 3.0], [2.0, 1.0, 1.0])
    assert seen[2] == ([2, 3, 3], [4.0, 0.5, 1.0], [2.0, 3.0, 3.0])
    with pytest.raises(ValueError, match="increasing order"):
        best.offer(3, [0.0, 0.0, 0.0], np.zeros((3, 2, 2)))

