"""Priors query/retrieve over DICOM TLS (PS3.15 B.9) against a TLS-only Q/R SCP.

A pynetdicom Query/Retrieve SCP listens with a server context only (a plain
association cannot reach it): it answers C-FIND at STUDY, SERIES and IMAGE
level from one node SR and returns the SR by C-GET. The node's priors code
must find and fetch the report with the client context, and fail clearly
without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

from dicom_node.errors import AssociationFailedError
from dicom_node.readers.report_reader import REPORT_SOP_CLASSES
from dicom_node.scu.priors import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    fetch_prior_summaries,
)
from dicom_node.scu.send import Destination
from dicom_node.tls import client_context, server_context
from dicom_node.writers.write_results import build_result_objects
from service.completion import priors_spec
from service.jobs import ClientTlsSpec, PriorsSpec
from service.priors import find_priors
from service.settings import NodeSettings, PriorsSettings, Settings, TlsSettings
from tests.conftest import free_port
from tests.helpers.writer_fixtures import make_result, write_synthetic_exam
from tests.integration.test_node_tls import pki  # noqa: F401  (module fixture: CA and certificates)

pytestmark = [pytest.mark.integration]

PACS_AET = "TLS-PACS"
CALLING_AET = "WBDWI-TEST"
PRIOR_DATE = "20230601"  # before the synthetic exams' 20240102


def _identifier(report: Dataset, query: Dataset) -> Dataset:
    answer = Dataset()
    answer.QueryRetrieveLevel = query.QueryRetrieveLevel
    for keyword in query.dir():
        if keyword != "QueryRetrieveLevel" and keyword in report:
            setattr(answer, keyword, report.data_element(keyword).value)  # type: ignore[union-attr]
    return answer


def _matches(report: Dataset, query: Dataset) -> bool:
    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        wanted = str(query.get(keyword, "") or "")
        if wanted and wanted != str(report.get(keyword, "")):
            return False
    return True


def _start_tls_pacs(report: Dataset, pki_folder: Path) -> Any:
    def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        if _matches(report, event.identifier):
            yield 0xFF00, _identifier(report, event.identifier)
        yield 0x0000, None

    def on_get(event: Any) -> Iterator[int | tuple[int, Dataset | None]]:
        if not _matches(report, event.identifier):
            yield 0
            yield 0x0000, None
            return
        yield 1
        yield 0xFF00, report

    ae = AE(ae_title=PACS_AET)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in REPORT_SOP_CLASSES:
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    return ae.start_server(
        ("127.0.0.1", free_port()),
        block=False,
        ssl_context=server_context(pki_folder / "node.crt", pki_folder / "node.key"),
        evt_handlers=[(evt.EVT_C_FIND, on_find), (evt.EVT_C_GET, on_get)],
    )


def test_priors_are_found_and_fetched_over_tls(pki: Path, tmp_path: Path) -> None:  # noqa: F811
    synthetic = write_synthetic_exam(tmp_path / "input")
    report = build_result_objects(synthetic.exam, make_result(synthetic)).by_folder["sr"][0]
    report.StudyDate = PRIOR_DATE
    server = _start_tls_pacs(report, pki)
    try:
        port = server.server_address[1]
        peer = Destination("127.0.0.1", port, PACS_AET, CALLING_AET, timeout_s=10.0)
        tls = client_context(ca_bundle=pki / "ca.crt")

        fetched = fetch_prior_summaries(
            peer, str(report.PatientID), str(report.get("IssuerOfPatientID", "")), tls=tls
        )

        assert fetched.skipped == ()
        assert [s.study_instance_uid for s in fetched.summaries] == [report.StudyInstanceUID]
        assert fetched.summaries[0].sr_sop_instance_uid == report.SOPInstanceUID
        with pytest.raises(AssociationFailedError, match="C-FIND association with"):
            fetch_prior_summaries(peer, str(report.PatientID))  # plain DICOM: refused
    finally:
        server.shutdown()


def test_job_priors_ask_the_peer_over_tls(pki: Path, tmp_path: Path) -> None:  # noqa: F811
    prior = write_synthetic_exam(tmp_path / "prior")
    report = build_result_objects(prior.exam, make_result(prior)).by_folder["sr"][0]
    report.StudyDate = PRIOR_DATE
    current = write_synthetic_exam(tmp_path / "current")
    assert current.exam.study_instance_uid != report.StudyInstanceUID
    server = _start_tls_pacs(report, pki)
    try:
        spec = PriorsSpec(
            history_path=str(tmp_path / "history.sqlite3"),
            pacs=f"{PACS_AET}@127.0.0.1:{server.server_address[1]}",
            calling_aet=CALLING_AET,
            timeout_seconds=10.0,
            tls=ClientTlsSpec(ca_bundle=str(pki / "ca.crt")),
        )
        assert PriorsSpec.from_dict(spec.to_dict()) == spec  # the job store keeps it as JSON

        priors = find_priors(spec, current.exam)

        assert priors.warnings == ()
        assert priors.pacs_asked == spec.pacs
        assert priors.prepared is not None
        assert priors.prepared.fetched_from_pacs == 1
        assert [p.study_instance_uid for p in priors.prepared.priors] == [report.StudyInstanceUID]
    finally:
        server.shutdown()


def test_priors_spec_takes_the_export_tls_settings(pki: Path, tmp_path: Path) -> None:  # noqa: F811
    priors = PriorsSettings(enabled=True, pacs=f"{PACS_AET}@pacs.example:11112")
    node = NodeSettings(data_dir=tmp_path)
    files = TlsSettings(
        ca_bundle=pki / "ca.crt", certificate=pki / "node.crt", private_key=pki / "node.key"
    )
    plain = priors_spec(Settings(node=node, priors=priors, tls=files))
    assert plain is not None and plain.tls is None

    spec = priors_spec(
        Settings(
            node=node,
            priors=priors,
            tls=replace(files, export=True, check_hostname=False),
        )
    )

    assert spec is not None
    assert spec.tls == ClientTlsSpec(
        ca_bundle=str(pki / "ca.crt"),
        certificate=str(pki / "node.crt"),
        private_key=str(pki / "node.key"),
        check_hostname=False,
    )
