"""`make bench`: run every benchmark and print its figures (benchmarks assert nothing).

`python -m bench [name ...]` runs a subset; names are the modules below without `_bench`.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time

BENCHES: tuple[str, ...] = (
    "raw",
    "report",
    "writer",
    "pipeline",
    "dashboard",
    "survey",
    "dispatch",
)


def machine() -> str:
    cpus = len(os.sched_getaffinity(0))
    python = platform.python_version()
    return f"{platform.machine()} · {cpus} CPU · Python {python} · {platform.platform(terse=True)}"


def main(argv: list[str]) -> int:
    selected = argv or list(BENCHES)
    unknown = [name for name in selected if name not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
        return 2
    print(f"# b24-nps benchmarks — {machine()}")
    for name in selected:
        module = importlib.import_module(f"bench.{name}_bench")
        print(f"\n## {name}")
        started = time.perf_counter()
        try:
            module.main()
        except KeyboardInterrupt:
            print(f"\n{name}: interrupted; what it started is stopped and its scratch data dropped")
            return 130
        print(f"({name}: {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
