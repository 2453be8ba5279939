"""The noise estimate's 99th centile from the top values only equals NumPy's, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from processing.adc import _upper_percentile
from processing.backend import Device, select_backend

CPU = select_backend(Device.CPU)


def _arrays() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(11)
    size = 300_001
    air_and_body = np.concatenate(
        [rng.rayleigh(3.0, size), rng.normal(400.0, 60.0, size // 6).clip(1.0)]
    )
    rng.shuffle(air_and_body)
    return [
        ("rayleigh", rng.rayleigh(2.0, size)),
        ("air and body", air_and_body),
        ("integers with ties", rng.integers(1, 50, size).astype(np.float64)),
        ("few distinct values", rng.choice([1.0, 2.0, 1000.0], size, p=[0.5, 0.495, 0.005])),
        ("sorted", np.sort(rng.random(size))),
        ("sorted descending", np.sort(rng.random(size))[::-1].copy()),
        ("just above the sampling size", rng.random(1 << 16)),
        ("below the sampling size", rng.random(5000)),
        ("one huge outlier", np.append(rng.random(size), 1e30)),
        ("a sample that misleads", _misleading(rng, size)),
    ]


def _misleading(rng: np.random.Generator, size: int) -> np.ndarray:
    """Every 128th value is large: half of every 64th, under 1 % of all."""
    values = rng.random(size)
    values[::128] = 5.0 + rng.random(values[::128].size)
    return values


@pytest.mark.parametrize(
    ("name", "values"), _arrays(), ids=lambda v: v if isinstance(v, str) else ""
)
@pytest.mark.parametrize("q", [99.0, 99.9, 95.0])
def test_upper_percentile_is_numpy_percentile(name: str, values: np.ndarray, q: float) -> None:
    for dtype in (np.float32, np.float64):
        data = values.astype(dtype)
        expected = float(np.percentile(data, q))
        assert _upper_percentile(data.copy(), q, CPU) == expected, name


def test_a_nan_gives_numpys_nan() -> None:
    values = np.random.default_rng(3).random(200_000).astype(np.float32)
    values[1234] = np.nan
    assert np.isnan(_upper_percentile(values, 99.0, CPU))
