"""Run the benchmarks and print a summary of pass/fail.

    python -m benchmarks                 the fast ones (minutes: `make bench`)
    python -m benchmarks --learning      the learning checks (tens of minutes each: `make bench-learning`)
    python -m benchmarks NAME [NAME...]  the named ones, whatever their kind

A benchmark module sets `KIND = "learning"` when it trains through the toy world's pipeline, and `KIND = "peer"`
when it times the project beside another framework installed in its own environment (bench_trl: TRL, in
.venv-trl; minutes; `make bench-trl`); those run only by name. The rest are fast.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks


def kind(name: str) -> str:
    return getattr(importlib.import_module(f"benchmarks.{name}"), "KIND", "fast")


def selection(argv: list[str]) -> list[str]:
    """The benchmarks the command line asks for (see the module docstring); ValueError names unknown ones."""
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    if argv in ([], ["--learning"]):
        return [n for n in names if kind(n) == ("learning" if argv else "fast")]
    unknown = [n for n in argv if n not in names]
    if unknown:
        raise ValueError(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names)}")
    return argv


def main(argv: list[str]) -> int:
    try:
        wanted = selection(argv)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    failed = []
    for name in wanted:
        print(f"== {name} ==", flush=True)
        start = time.perf_counter()
        ok = importlib.import_module(f"benchmarks.{name}").main()
        print(f"-- {name}: {'PASS' if ok else 'FAIL'} ({time.perf_counter() - start:.1f}s)\n", flush=True)
        if not ok:
            failed.append(name)
    print(
        f"{len(wanted) - len(failed)} of {len(wanted)} benchmarks met their targets"
        + (f"; missed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
