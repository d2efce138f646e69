"""`python -m benchmarks`: the fast ones by default, the learning checks with --learning, or the named ones."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import kind, selection

LEARNING = {"bench_learning", "bench_algorithms", "bench_simulator_labelling"}


PEER = {"bench_trl"}


def test_the_default_run_leaves_out_every_learning_check_and_peer_comparison():
    fast = selection([])
    assert "bench_sim_server" in fast and "bench_search_client" in fast
    assert not (LEARNING | PEER) & set(fast)


def test_a_peer_comparison_runs_by_name_only():
    assert kind("bench_trl") == "peer"
    assert not PEER & set(selection(["--learning"]))
    assert selection(["bench_trl"]) == ["bench_trl"]


def test_learning_selects_the_learning_checks_and_names_select_themselves():
    assert set(selection(["--learning"])) == LEARNING
    assert selection(["bench_learning", "bench_sim_server"]) == ["bench_learning", "bench_sim_server"]


def test_an_unknown_name_lists_the_available_ones():
    with pytest.raises(
        ValueError, match="unknown benchmark\\(s\\): bench_nothing; available: bench_algorithms"
    ):
        selection(["bench_nothing"])
