"""Lesion regions: the trunk test uses the landmarks' trunk (8-connected), all lesions at once."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from processing.backend import Device, select_backend
from processing.landmarks import BodyLandmarks, find_landmarks
from processing.regions import in_trunk
from processing.settings import ProcessingSettings

CPU = select_backend(Device.CPU)
SPACING = (5.0, 2.0, 2.0)


def _landmarks(body: np.ndarray) -> BodyLandmarks:
    return find_landmarks(body, SPACING, ProcessingSettings(), CPU)


def _one_by_one(body: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The definition, lesion by lesion: label the slice (8-connected), nearest body voxel."""
    answers = []
    for z_float, y, x in centroids:
        z = int(np.clip(round(float(z_float)), 0, body.shape[0] - 1))
        labels, count = scipy.ndimage.label(body[z], structure=np.ones((3, 3), dtype=bool))
        if count <= 1:
            answers.append(True)
            continue
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        points = np.argwhere(labels > 0)
        nearest = points[int(np.argmin((points[:, 0] - y) ** 2 + (points[:, 1] - x) ** 2))]
        answers.append(bool(labels[nearest[0], nearest[1]] == int(np.argmax(sizes))))
    return np.asarray(answers)


def test_an_arm_touching_the_trunk_at_a_corner_is_trunk_as_for_the_landmarks() -> None:
    body = np.zeros((3, 40, 40), dtype=bool)
    body[:, 10:30, 10:30] = True  # trunk
    body[:, 30:34, 30:34] = True  # touches the trunk's corner only (diagonal neighbour)
    body[:, 2:6, 36:39] = True  # a separate arm
    landmarks = _landmarks(body)
    # The landmarks' trunk box includes the corner piece: one 8-connected component.
    assert tuple(landmarks.trunk_box[1]) == (10.0, 33.0, 10.0, 33.0)
    centroids = np.asarray(
        [[1.0, 20.0, 20.0], [1.0, 32.0, 32.0], [1.0, 4.0, 37.0], [1.0, 5.0, 33.0], [1.0, 9.0, 9.0]]
    )
    answer = in_trunk(centroids, body, landmarks, CPU)
    # trunk, corner piece (trunk since 8-connected; 4-connected called it an arm),
    # arm, nearest to the arm (outside the body), nearest to the trunk (outside the body)
    assert answer.tolist() == [True, True, False, False, True]
    assert answer.tolist() == _one_by_one(body, centroids).tolist()


def test_one_pass_equals_the_lesion_by_lesion_definition_on_random_bodies() -> None:
    rng = np.random.default_rng(7)
    body = scipy.ndimage.binary_opening(rng.random((12, 48, 48)) > 0.55)
    body[:, 14:34, 14:34] = True
    landmarks = _landmarks(body)
    centroids = np.column_stack(
        [rng.uniform(-0.4, 11.4, 300), rng.uniform(0, 47, 300), rng.uniform(0, 47, 300)]
    )
    answer = in_trunk(centroids, body, landmarks, CPU)
    assert answer.tolist() == _one_by_one(body, centroids).tolist()
    assert 0 < answer.sum() < len(answer)  # both answers occur


@pytest.mark.parametrize("count", [0, 1])
def test_few_centroids_and_no_body(count: int) -> None:
    body = np.zeros((2, 8, 8), dtype=bool)
    answer = in_trunk(np.full((count, 3), 1.0), body, _landmarks(body), CPU)
    assert answer.tolist() == [True] * count
