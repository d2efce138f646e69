"""`python -m benchmarks`: the fast ones by default, the learning checks with --learning, or the named ones."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import selection

LEARNING = {"bench_learning", "bench_algorithms", "bench_simulator_labelling"}


def test_the_default_run_leaves_out_every_learning_check():
    fast = selection([])
    assert "bench_sim_server" in fast and "bench_search_client" in fast
    assert not LEARNING & set(fast)


def test_learning_selects_the_learning_checks_and_names_select_themselves():
    assert set(selection(["--learning"])) == LEARNING
    assert selection(["bench_learning", "bench_sim_server"]) == ["bench_learning", "bench_sim_server"]


def test_an_unknown_name_lists_the_available_ones():
    with pytest.raises(
        ValueError, match="unknown benchmark\\(s\\): bench_nothing; available: bench_algorithms"
    ):
        selection(["bench_nothing"])
