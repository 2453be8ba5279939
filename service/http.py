"""Metric families and their Prometheus text exposition (format 0.0.4).

The HTTP port itself (``/healthz``, ``/readyz``, ``/metrics`` and the dashboard)
is served by :mod:`service.web`:

- ``/healthz``: 200 while the process runs (liveness).
- ``/readyz``: 200 when the DICOM listener is up, the job store answers and the
  worker and exporter threads are alive; otherwise 503 listing what is not.
- ``/metrics``: Prometheus text exposition format 0.0.4.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Metric", "render_metrics"]


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric family with its samples ``(labels, value)``."""

    name: str
    kind: str  # counter | gauge
    help: str
    samples: tuple[tuple[dict[str, str], float], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(metrics: Iterable[Metric]) -> str:
    """Prometheus text format of ``metrics``."""
    lines: list[str] = []
    for metric in metrics:
        lines.append(f"# HELP {metric.name} {metric.help}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for labels, value in metric.samples:
            label_text = ",".join(f'{key}="{_escape(val)}"' for key, val in sorted(labels.items()))
            suffix = f"{{{label_text}}}" if label_text else ""
            number = repr(float(value)) if not float(value).is_integer() else str(int(value))
            lines.append(f"{metric.name}{suffix} {number}")
    return "\n".join(lines) + "\n"
