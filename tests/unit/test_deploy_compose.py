"""``deploy/compose.yaml``: Orthanc lets the node query and retrieve its priors the way it does.

The node fetches priors with C-FIND and C-GET (:mod:`dicom_node.scu.priors`), as
the AE title it calls with; Orthanc must know that AE and allow C-GET from it,
and the node must be pointed at Orthanc for priors. Read without a YAML
library: the lines checked are single ``KEY: value`` lines of the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from service.settings import parse_destination

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"


def _environment_value(text: str, key: str) -> str:
    found = re.findall(rf"^\s+{key}:\s*(.+?)\s*$", text, flags=re.MULTILINE)
    assert len(found) == 1, f"{key} appears {len(found)} times in {COMPOSE}"
    value = str(found[0])
    if value[:1] in "'\"" and value[-1:] == value[:1]:
        value = value[1:-1]
    return value


def test_orthanc_allows_the_node_to_get_its_priors() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    node_aet = _environment_value(text, "WBDWI_NODE_AE_TITLE")
    calling_aet = (
        _environment_value(text, "WBDWI_PRIORS_CALLING_AET")
        if "WBDWI_PRIORS_CALLING_AET" in text
        else node_aet
    )
    priors_peer = parse_destination(_environment_value(text, "WBDWI_PRIORS_PACS"))
    assert priors_peer.ae_title == _environment_value(text, "ORTHANC__DICOM_AET")
    assert priors_peer.port == int(_environment_value(text, "ORTHANC__DICOM_PORT"))

    modalities = json.loads(_environment_value(text, "ORTHANC__DICOM_MODALITIES"))
    node_entries = [m for m in modalities.values() if m["AET"] == calling_aet]
    assert len(node_entries) == 1, modalities
    assert node_entries[0]["AllowFind"] is True
    assert node_entries[0]["AllowGet"] is True
    assert "C-MOVE" not in text, "the node retrieves priors with C-GET, never C-MOVE"
