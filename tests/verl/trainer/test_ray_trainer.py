"""Pieces of the fit loop that need no workers (the end-to-end runs are in test_main_ppo.py)."""

from __future__ import annotations

import pytest

from verl.trainer.ray_trainer import timing_shares


def test_each_timing_becomes_a_share_of_the_step():
    metrics = {"timing_s/step": 10.0, "timing_s/gen": 4.0, "timing_s/search": 2.5, "actor/pg_loss": 0.3}
    assert timing_shares(metrics) == {"timing_share/gen": 0.4, "timing_share/search": 0.25}


@pytest.mark.parametrize("metrics", [{}, {"timing_s/step": 0.0, "timing_s/gen": 1.0}])
def test_no_step_time_no_shares(metrics):
    assert timing_shares(metrics) == {}
