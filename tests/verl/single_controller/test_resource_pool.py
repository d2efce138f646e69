"""RayResourcePool: bounded reservation with a clear shortfall message, and input validation."""

from __future__ import annotations

import pytest
import ray
from ray.util import placement_group_table

from verl.single_controller.resource_pool import RayResourcePool, ResourceUnavailableError


def test_a_pool_larger_than_the_cluster_fails_fast_saying_what_was_asked_and_what_exists(ray_cluster):
    cpus = int(ray.cluster_resources()["CPU"])
    with pytest.raises(ResourceUnavailableError) as caught:
        RayResourcePool(world_size=3, num_cpus_per_worker=cpus + 1, name="too-big", wait_timeout_s=0.5)
    text = str(caught.value)
    assert "'too-big'" in text and "within 0.5s" in text
    assert f"3 workers x ({cpus + 1} CPU, 0 GPU) = {3 * (cpus + 1)} CPUs and 0 GPUs" in text
    assert f"the cluster has {cpus} CPUs" in text


def _live_placement_groups() -> int:
    return sum(1 for group in placement_group_table().values() if group["state"] != "REMOVED")


def test_a_failed_reservation_is_withdrawn_not_left_pending(ray_cluster):
    before = _live_placement_groups()
    with pytest.raises(ResourceUnavailableError):
        RayResourcePool(world_size=1, num_cpus_per_worker=1024, wait_timeout_s=0.3)
    assert _live_placement_groups() == before


def test_more_gpus_than_the_cluster_has_are_refused(ray_cluster):
    gpus = int(ray.cluster_resources().get("GPU", 0))
    with pytest.raises(ResourceUnavailableError, match=f"{gpus + 1} GPU"):
        RayResourcePool(world_size=1, num_gpus_per_worker=gpus + 1, wait_timeout_s=0.3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"world_size": 0}, "world_size must be >= 1"),
        ({"world_size": 1, "num_cpus_per_worker": 0}, "num_cpus_per_worker must be > 0"),
        ({"world_size": 1, "num_gpus_per_worker": -1}, "num_gpus_per_worker must be >= 0"),
        ({"world_size": 1, "strategy": "TIGHT"}, "strategy must be one of"),
        ({"world_size": 3, "nnodes": 2}, r"nnodes must be >= 1 and divide world_size \(3\)"),
    ],
)
def test_bad_pool_settings_are_rejected_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RayResourcePool(**kwargs)


def test_a_pool_over_two_nodes_needs_two_distinct_nodes(ray_cluster):
    """nnodes=2 reserves one bundle per node with STRICT_SPREAD: this one-node cluster cannot hold it, though
    its CPUs could hold both ranks (tests/verl/trainer/test_multinode.py runs it on a two-node cluster)."""
    assert len([node for node in ray.nodes() if node["Alive"]]) == 1
    with pytest.raises(
        ResourceUnavailableError, match=r"on 2 distinct nodes \(1 per node\).* on 1 node\(s\)"
    ):
        RayResourcePool(world_size=2, num_cpus_per_worker=0.5, nnodes=2, wait_timeout_s=0.5)
    pool = RayResourcePool(world_size=2, num_cpus_per_worker=0.5, wait_timeout_s=5)
    pool.remove()


def test_ranks_are_laid_out_node_by_node():
    pool = RayResourcePool.__new__(RayResourcePool)
    pool.world_size, pool.nnodes = 6, 3
    assert [pool.bundle_of(rank) for rank in range(6)] == [0, 0, 1, 1, 2, 2]
    pool.nnodes = 1
    assert [pool.bundle_of(rank) for rank in range(6)] == list(range(6))
