"""The budget choice: at budget η each item keeps the η′ ≤ η with the smallest error."""

from __future__ import annotations

import numpy as np
import pytest

from fitsae.budget import EXHAUSTIVE_UP_TO, LADDER_SIZE, RunningBest, candidates, ladder


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



def test_candidates_are_every_eta_for_small_latents_and_a_growing_ladder_for_large_ones():
    assert ladder(EXHAUSTIVE_UP_TO) == list(range(1, EXHAUSTIVE_UP_TO + 1))
    assert candidates(5, 16) == [1, 2, 3, 4, 5]
    steps = ladder(192)
    assert steps[0] == 1 and steps[-1] == 192 and len(steps) <= LADDER_SIZE and steps == sorted(set(steps))
    for eta in range(1, 193):
        tried = candidates(eta, 192)
        assert tried == sorted(set(tried)) and tried[-1] == eta and set(tried) - {eta} <= set(steps)
        # A budget on the ladder is a candidate of every larger budget, and so are its own
        # candidates: the error cannot rise from it to any larger budget.
        for smaller in (k for k in steps if k < eta):
            assert set(candidates(smaller, 192)) <= set(tried)


def test_a_copy_tries_one_more_eta_without_changing_the_original():
    best = RunningBest()
    best.offer(1, [2.0, 1.0], np.array([[1.0], [1.0]]))
    trial = best.copy()
    trial.offer(3, [1.0, 5.0], np.array([[3.0], [3.0]]))
    assert trial.eta.tolist() == [3, 1] and trial.arrays[0].ravel().tolist() == [3.0, 1.0]
    assert best.eta.tolist() == [1, 1] and best.error.tolist() == [2.0, 1.0]
    best.offer(2, [3.0, 0.5], np.array([[2.0], [2.0]]))  # the original goes on from η′ = 1
    assert best.eta.tolist() == [1, 2]
