"""MPPS over a real association: a COMPLETED or DISCONTINUED step is final (PS3.4 F.7.2.2)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association

from dicom_node.receive.scp import MODALITY_PERFORMED_PROCEDURE_STEP
from tests.helpers.scp_harness import running_receiver

pytestmark = [pytest.mark.integration]

STUDY = "1.2.826.0.1.3680043.8.498.7"


@contextmanager
def _mpps_association(port: int) -> Iterator[Association]:
    ae = AE(ae_title="SCANNER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(MODALITY_PERFORMED_PROCEDURE_STEP)
    association = ae.associate("127.0.0.1", port, ae_title="WBDWI")
    assert association.is_established
    try:
        yield association
    finally:
        association.release()


def _create(association: Association) -> str:
    attributes = Dataset()
    attributes.PerformedProcedureStepStatus = "IN PROGRESS"
    step = Dataset()
    step.StudyInstanceUID = STUDY
    attributes.ScheduledStepAttributesSequence = [step]
    uid = str(generate_uid())
    status, _ = association.send_n_create(attributes, MODALITY_PERFORMED_PROCEDURE_STEP, uid)
    assert status.Status == 0x0000
    return uid


def _set(association: Association, uid: str, status_value: str) -> Dataset:
    modifications = Dataset()
    modifications.PerformedProcedureStepStatus = status_value
    status, _ = association.send_n_set(modifications, MODALITY_PERFORMED_PROCEDURE_STEP, uid)
    assert "Status" in status
    return status


@pytest.mark.parametrize("final", ["COMPLETED", "DISCONTINUED"])
def test_n_set_after_the_final_state_fails_with_a310(tmp_path: Path, final: str) -> None:
    with running_receiver(tmp_path) as (receiver, store), _mpps_association(receiver.port) as peer:
        uid = _create(peer)
        assert _set(peer, uid, "IN PROGRESS").Status == 0x0000  # still open: accepted
        assert _set(peer, uid, final).Status == 0x0000
        for later in ("IN PROGRESS", "COMPLETED", "DISCONTINUED"):
            refused = _set(peer, uid, later)
            assert refused.Status == 0x0110
            assert refused.ErrorID == 0xA310
            assert "may no longer be updated" in refused.ErrorComment
        assert store.mpps_status(uid) == final


def test_n_set_of_an_unknown_mpps_is_no_such_instance(tmp_path: Path) -> None:
    with running_receiver(tmp_path) as (receiver, _), _mpps_association(receiver.port) as peer:
        refused = _set(peer, str(generate_uid()), "COMPLETED")
        assert refused.Status == 0x0112
        assert "ErrorID" not in refused
