"""Seeding and random-number-generator state for exact resume.

``set_seed`` seeds every generator a training step draws from (Python ``random``, NumPy's global generator,
torch on CPU and every CUDA device). ``get_rng_state`` captures those generators as plain containers of
ints, floats and tensors, never arbitrary objects, so a checkpoint can hold them and be read back with
``torch.load(weights_only=True)`` (which refuses to run pickled code) and the Python/NumPy parts could be
written as JSON as well. ``set_rng_state`` puts them back, so the draws after a resume equal the draws the
uninterrupted run would have made.
"""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

# NumPy's legacy seeding accepts exactly this range; checking it here gives an error that names the flag.
_MAX_SEED = 2**32 - 1


def set_seed(seed: int) -> None:
    """Seed Python ``random``, NumPy's global generator, torch (CPU) and all CUDA devices with ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {_MAX_SEED}], got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    # torch.manual_seed also seeds every CUDA device when CUDA is initialised; the explicit call covers
    # devices that are initialised later in the process.
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def derive_seed(*parts: int) -> int:
    """A seed that depends only on ``parts`` (a hash, so neighbouring inputs give unrelated seeds).

    Used wherever one draw must not depend on how many draws came before it: sample j of prompt i, the
    noisy-or-useful draw of one search, so a resumed run makes the same draws as an uninterrupted one."""
    digest = hashlib.blake2b(":".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # torch seeds must fit in a signed 64-bit integer


def get_rng_state() -> dict[str, Any]:
    """Capture the Python, NumPy, torch CPU and CUDA generator states as ints, floats, lists and tensors."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": {"version": int(version), "state": [int(v) for v in internal], "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": str(name),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states captured by :func:`get_rng_state`.

    CUDA states are restored when this process sees the same number of devices; otherwise (e.g. a GPU
    checkpoint resumed on CPU) they are skipped with a warning, because there is no exact equivalent.
    """
    missing = [part for part in ("python", "numpy", "torch", "cuda") if part not in state]
    if missing:
        raise ValueError(f"RNG state is missing part(s) {missing}; expected the output of get_rng_state()")
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["bit_generator"],
            np.asarray(npy["keys"], dtype=np.uint32),
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"])
    cuda_states = list(state["cuda"])
    if not cuda_states:
        return
    devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if devices != len(cuda_states):
        logger.warning(
            "RNG state holds %d CUDA generator(s) but this process sees %d device(s); CUDA RNG not restored",
            len(cuda_states),
            devices,
        )
        return
    torch.cuda.set_rng_state_all(cuda_states)


def save_rng_state(path: str | Path) -> Path:
    """Write the current generator states to ``path`` (a torch file loadable with ``weights_only=True``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(get_rng_state(), path)
    return path


def load_rng_state(path: str | Path) -> None:
    """Restore generator states written by :func:`save_rng_state`, refusing anything but plain data."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RNG state file not found: {path}")
    set_rng_state(torch.load(path, weights_only=True))
