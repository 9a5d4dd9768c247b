"""``python -m benchmarks`` (``make bench``): run every ``benchmarks/bench_*.py`` module's ``run()`` and print its
figures. A benchmark that fails is reported and the others still run; the exit status says whether all ran."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path


def bench_modules() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(f"benchmarks.{m.name}" for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main() -> int:
    failed = []
    for name in bench_modules():
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            figures = importlib.import_module(name).run()
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        if isinstance(figures, dict):
            print(json.dumps(figures, indent=2, default=str))
        elif figures is not None:
            print(figures)
        print(f"({time.perf_counter() - started:.0f} s)", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
