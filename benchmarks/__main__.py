"""Run every benchmark module: ``benchmarks/bench_*.py``, each exposing ``main() -> None``.

``python -m benchmarks`` runs them all in name order; ``python -m benchmarks NAME ...``
runs only those whose module name contains one of the NAMEs (e.g. ``assembly``).
From the first word starting with ``-`` on, the words are options (with their
values), passed to the selected modules whose ``main`` takes an argument list
(e.g. ``python -m benchmarks robustness --quick --out /tmp/sweep``).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
from pathlib import Path


def _modules() -> list[str]:
    folder = Path(__file__).resolve().parent
    return sorted(f"benchmarks.{path.stem}" for path in folder.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    first_option = next((i for i, word in enumerate(argv) if word.startswith("-")), len(argv))
    names, options = argv[:first_option], argv[first_option:]
    selected = [m for m in _modules() if not names or any(word in m for word in names)]
    if not selected:
        print(f"no benchmark module matches {argv}; available: {_modules()}", file=sys.stderr)
        return 2
    for name in selected:
        module = importlib.import_module(name)
        runner = getattr(module, "main", None)
        if not callable(runner):
            print(f"{name} has no main(): skipped", file=sys.stderr)
            continue
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        if inspect.signature(runner).parameters:
            runner(options)
        elif options:
            print(f"{name} takes no options: {options} ignored", file=sys.stderr)
            runner()
        else:
            runner()
        print(f"== {name} done in {time.perf_counter() - started:.1f} s\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
