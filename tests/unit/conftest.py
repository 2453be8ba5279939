"""Fixtures shared by the writer unit tests (module-scoped: one synthetic exam per module).

A test module that needs a variant (another patient name, another device serial
number) defines its own fixture of the same name, which takes precedence.
"""

from __future__ import annotations

import pytest

from dicom_node.writers import WriterContext, WriterIdentity
from processing.results import ProcessingResult
from tests.helpers.writer_fixtures import SyntheticExam, make_result, write_synthetic_exam


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticExam:
    return write_synthetic_exam(tmp_path_factory.mktemp("exam"))


@pytest.fixture(scope="module")
def result(synthetic: SyntheticExam) -> ProcessingResult:
    return make_result(synthetic)


@pytest.fixture(scope="module")
def ctx(synthetic: SyntheticExam) -> WriterContext:
    identity = WriterIdentity(software_version="9.9", device_serial_number="SN")
    return WriterContext.create(synthetic.exam, identity, "d", computed_b_values=[1000.0])
