"""Dead letters grouped per job and destination, as ``wbdwi status`` and the dashboard show them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.jobs import OutboxRecord

__all__ = ["DeadLetterGroup", "summarise_dead_letters"]


@dataclass(frozen=True, slots=True)
class DeadLetterGroup:
    """The dead-lettered files of one job for one destination."""

    job_id: int
    destination: str
    files: int
    max_attempts: int
    first_error: str
    last_error: str
    distinct_errors: int

    def as_dict(self) -> dict[str, Any]:
        """JSON values."""
        return {
            "job_id": self.job_id,
            "destination": self.destination,
            "files": self.files,
            "max_attempts": self.max_attempts,
            "first_error": self.first_error,
            "last_error": self.last_error,
            "distinct_errors": self.distinct_errors,
            "retry": f"wbdwi retry {self.job_id}",
        }


def summarise_dead_letters(dead: list[OutboxRecord]) -> list[DeadLetterGroup]:
    """Group dead-lettered rows per job and destination, in outbox order.

    The first and last error are those of the group's first and last outbox row.
    """
    groups: dict[tuple[int, str], list[OutboxRecord]] = {}
    for row in dead:
        groups.setdefault((row.job_id, row.destination), []).append(row)
    return [
        DeadLetterGroup(
            job_id=job_id,
            destination=destination,
            files=len(rows),
            max_attempts=max(row.attempts for row in rows),
            first_error=rows[0].last_error,
            last_error=rows[-1].last_error,
            distinct_errors=len({row.last_error for row in rows}),
        )
        for (job_id, destination), rows in groups.items()
    ]
