"""Starting (or joining) the Ray cluster the single controller runs on.

`init_ray` is what the trainer and the tests call. It either *joins* a running cluster or *starts* a private
one, never something in between:

* join: `address` ("auto", "host:port", "ray://...") or, when none is given, the `RAY_ADDRESS` environment
  variable. Ray refuses node-level options (CPUs, GPUs, object store) when joining: the cluster's nodes were
  sized by `ray start`, so any given here are dropped with a warning.
* start: anything else starts a new local instance with `address="local"`, explicitly, so a
  `ray_current_cluster` file left in /tmp/ray by an earlier `ray start` cannot make the run try to join a
  cluster that may be gone. No dashboard (it costs seconds and memory), a bounded object store.

Token authentication is off unless the user asked for it (a private local cluster needs none). The call is
idempotent, so every entry point can make it without caring whether Ray is already up.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

import ray

logger = logging.getLogger(__name__)

MIN_OBJECT_STORE_BYTES = 100 * 1024**2  # Ray refuses to start with much less; 100 MB works on a laptop
DEFAULT_OBJECT_STORE_BYTES = 256 * 1024**2
LOCAL = "local"


def cluster_address(address: str | None = None) -> str | None:
    """The cluster to join: `address`, else $RAY_ADDRESS; None (or "local") means start a private one."""
    address = address or os.environ.get("RAY_ADDRESS", "").strip() or None
    return None if address == LOCAL else address


def init_ray(
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    object_store_memory: int | None = None,
    env_vars: Mapping[str, str] | None = None,
    address: str | None = None,
) -> dict[str, float]:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a local instance; returns the cluster's
    resources. A process already connected keeps its cluster.

    num_cpus / num_gpus: logical resources of a local instance (None: Ray detects them; GPUs from
        CUDA_VISIBLE_DEVICES).
    object_store_memory: bytes of shared memory for a local instance's object store (at least 100 MB;
        None: 256 MB).
    env_vars: environment variables for every Ray worker process of this job (e.g. PYTHONPATH,
        TOKENIZERS_PARALLELISM); they apply only when this call starts or joins the cluster.
    address: the cluster to join ("auto", "host:port"); "local" forces a new local instance even when
        RAY_ADDRESS is set.
    """
    if object_store_memory is not None and object_store_memory < MIN_OBJECT_STORE_BYTES:
        raise ValueError(
            f"init_ray: object_store_memory is {object_store_memory} bytes; Ray needs at least "
            f"{MIN_OBJECT_STORE_BYTES} (100 MB)"
        )
    if ray.is_initialized():
        return ray.cluster_resources()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    runtime_env = {"env_vars": {str(k): str(v) for k, v in env_vars.items()}} if env_vars else None
    join = cluster_address(address)
    if join is not None:
        ignored = {
            name: value
            for name, value in (
                ("num_cpus", num_cpus),
                ("num_gpus", num_gpus),
                ("object_store_memory", object_store_memory),
            )
            if value is not None
        }
        if ignored:
            logger.warning(
                "joining the Ray cluster at %s: %s apply only to a cluster this run starts; the cluster's "
                "own resources are used (size its nodes with `ray start`)",
                join,
                ", ".join(f"{k}={v}" for k, v in ignored.items()),
            )
        ray.init(address=join, runtime_env=runtime_env)
    else:
        ray.init(
            address=LOCAL,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            object_store_memory=object_store_memory or DEFAULT_OBJECT_STORE_BYTES,
            include_dashboard=False,
            runtime_env=runtime_env,
        )
    return ray.cluster_resources()


def free_port() -> int:
    """A TCP port that was free on this host a moment ago (the OS picks it; a tiny race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])
