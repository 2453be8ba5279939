"""Seeded mutation runs of a recorded storage association against the node's receiver.

The test suite replays 300 mutated associations
(``tests/integration/test_mutation_run.py``); this runs more: 3 seeds x 1000
cases by default (``--cases N``, ``--seeds A,B,...``), each a fresh receiver
with a job store and spool in a temporary folder. What is mutated and what is
asserted: :mod:`tests.helpers.mutation_run` (no crash, no hang, every
acknowledged instance decodable and byte-identical to what was sent, nothing
left of a refused one, files and rows agree). Printed per seed: cases,
instances acknowledged and refused, time, slowest case, problems (expected 0).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path

from service.logging import configure_logging
from service.settings import LogFormat, LoggingSettings


def main(argv: list[str] | None = None) -> None:
    """Run the mutation seeds and print one line per seed (and every problem found)."""
    from tests.helpers.mutation_run import run_mutations
    from tests.helpers.scp_harness import running_receiver

    parser = argparse.ArgumentParser(prog="python -m benchmarks mutation_run")
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seeds", default="1,2,3")
    options = parser.parse_args(argv or [])
    configure_logging(LoggingSettings(level="error", format=LogFormat.CONSOLE))
    crashes: list[str] = []
    previous = threading.excepthook
    threading.excepthook = lambda arguments: crashes.append(
        f"{arguments.exc_type.__name__}: {arguments.exc_value}"
    )
    try:
        for seed in (int(word) for word in options.seeds.split(",")):
            with (
                tempfile.TemporaryDirectory(prefix="wbdwi-bench-mutation-") as folder,
                running_receiver(Path(folder), pdu_timeout_seconds=5.0) as (receiver, store),
            ):
                report = run_mutations(
                    receiver,
                    Path(folder) / "spool",
                    store.has_instance,
                    seed=seed,
                    cases=options.cases,
                )
            problems = report.problems() + crashes
            print(
                f"seed {seed}: {report.cases} cases, {report.acknowledged} instances acknowledged, "
                f"{report.refused} refused, {report.seconds:.1f} s "
                f"(slowest case {report.slowest_case_seconds:.2f} s), {len(problems)} problems"
            )
            for problem in problems[:20]:
                print(f"  {problem}")
            crashes.clear()
    finally:
        threading.excepthook = previous


if __name__ == "__main__":
    main()
