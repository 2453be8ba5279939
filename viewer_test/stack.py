"""The viewer test's stack on loopback: a demo study in Orthanc + DICOMweb, OHIF on the same origin.

- :func:`make_study` runs the project's own pipeline as a user would: ``wbdwi phantom``
  (the reference phantom exam, as ``make demo`` sends it) and ``wbdwi process`` into a
  folder, so the result objects are exactly what the node writes today.
- :func:`viewer_orthanc` starts Orthanc (``tests.helpers.orthanc``) with the DICOMweb plugin
  and, when Debian's ``orthanc-webviewer`` is installed, Orthanc's Web Viewer.
- :func:`upload` stores every file through Orthanc's REST API (``POST /instances``).
- :class:`OhifServer` serves the prebuilt OHIF (``@ohif/app``'s ``dist/``) and proxies
  ``/dicom-web/`` and ``/wado`` to Orthanc, so OHIF and DICOMweb share one origin (no
  CORS); any other path that is not a file of ``dist/`` gets ``index.html`` (OHIF is a
  single-page application: ``/viewer?StudyInstanceUIDs=...`` is one of its routes).
  ``/app-config.js`` is generated: one DICOMweb data source, Orthanc's.
"""

from __future__ import annotations

import http.client
import json
import mimetypes
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.helpers.orthanc import OrthancServer, running_orthanc

__all__ = [
    "DICOMWEB_PLUGIN",
    "WEBVIEWER_PLUGIN",
    "OhifServer",
    "Study",
    "make_study",
    "ohif_app_config",
    "upload",
    "viewer_orthanc",
]

PLUGIN_DIR = Path("/usr/share/orthanc/plugins")
DICOMWEB_PLUGIN = PLUGIN_DIR / "libOrthancDicomWeb.so"
WEBVIEWER_PLUGIN = PLUGIN_DIR / "libOrthancWebViewer.so"
_PROXIED = ("/dicom-web/", "/wado")
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}


@dataclass(frozen=True)
class Study:
    """The demo study on disk: the scanner's files and the node's results."""

    inputs: Path
    results: Path
    measurements: dict[str, Any]

    @property
    def study_uid(self) -> str:
        uid: str = self.measurements["study_instance_uid"]
        return uid


def make_study(workdir: Path, tree: Path | None = None) -> Study:
    """Write the reference phantom exam and process it with ``wbdwi``.

    ``tree``: another checkout of the project whose code makes the study (its packages
    first on ``PYTHONPATH``, run by this venv's Python), e.g. an earlier commit of the
    writers to see what the viewers made of them; default: this checkout.
    """
    wbdwi = [sys.executable, "-c", "import sys; from service.cli import main; sys.exit(main())"]
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree.resolve())
    phantom = workdir / "phantom"
    results = workdir / "results"
    for command in (
        [*wbdwi, "phantom", "--out", str(phantom), "--preset", "reference", "--seed", "1"],
        [*wbdwi, "process", str(phantom / "dicom"), "--out", str(results), "--device", "cpu"],
    ):
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=300, check=False, env=env, cwd=tree
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    measurements = json.loads((results / "measurements.json").read_text())
    return Study(phantom / "dicom", results, measurements)


@contextmanager
def viewer_orthanc(
    workdir: Path,
    *,
    dicom_port: int | None = None,
    modalities: dict[str, list[Any]] | None = None,
) -> Iterator[tuple[OrthancServer, bool]]:
    """Orthanc with DICOMweb (and the Web Viewer when installed): (server, has_web_viewer).

    ``modalities``: Orthanc's DicomModalities (the node, to forward a reader's SEG to).
    """
    plugins = [str(DICOMWEB_PLUGIN)]
    web_viewer = WEBVIEWER_PLUGIN.exists()
    if web_viewer:
        plugins.append(str(WEBVIEWER_PLUGIN))
    config = {
        "HttpThreadsCount": 16,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
        "WebViewer": {"CachePath": str(workdir / "orthanc" / "webviewer-cache")},
        "DicomModalities": modalities or {},
    }
    with running_orthanc(
        workdir, dicom_port=dicom_port, plugins=plugins, extra_config=config
    ) as server:
        yield server, web_viewer


def upload(server: OrthancServer, folders: Sequence[Path]) -> int:
    """Store every file under ``folders`` in Orthanc (``POST /instances``); the count stored."""
    files = sorted(path for folder in folders for path in folder.rglob("*") if path.is_file())
    dicom = [path for path in files if path.suffix == ".dcm" or _is_part10(path)]

    def store(path: Path) -> None:
        request = urllib.request.Request(
            server.base_url + "/instances",
            data=path.read_bytes(),
            method="POST",
            headers={"Content-Type": "application/dicom"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            status = json.loads(response.read()).get("Status")
        if status not in {"Success", "AlreadyStored"}:
            raise RuntimeError(f"Orthanc did not store {path}: {status}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(store, dicom))
    return len(dicom)


def _is_part10(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(132)[128:] == b"DICM"


def ohif_app_config(origin: str) -> str:
    """OHIF's ``app-config.js``: Orthanc's DICOMweb (on ``origin``) as the only data source."""
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "showErrorDetails": "always",
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 10},
        "defaultDataSourceName": "orthanc",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "orthanc",
                "configuration": {
                    "friendlyName": "Orthanc (viewer test)",
                    "name": "orthanc",
                    "wadoUriRoot": f"{origin}/wado",
                    "qidoRoot": f"{origin}/dicom-web",
                    "wadoRoot": f"{origin}/dicom-web",
                    "qidoSupportsIncludeField": False,
                    "supportsReject": False,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": False,
                    "supportsWildcard": True,
                    "staticWado": False,
                    "singlepart": "bulkdata,video",
                    "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
                    "omitQuotationForMultipartRequest": True,
                },
            }
        ],
    }
    return "window.config = " + json.dumps(config, indent=2) + ";\n"


class _Handler(BaseHTTPRequestHandler):
    server: _OhifHttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith(_PROXIED):
            self._proxy()
        elif self.command in {"GET", "HEAD"}:
            self._static(path)
        else:
            self.send_error(405)

    def _static(self, path: str) -> None:
        if path == "/app-config.js":
            self._send(200, "application/javascript", self.server.app_config.encode())
            return
        dist = self.server.dist
        candidate = (dist / path.lstrip("/")).resolve()
        if not candidate.is_relative_to(dist) or not candidate.is_file():
            candidate = dist / "index.html"  # single-page application fallback
        kind = mimetypes.guess_type(candidate.name)[0] or "application/octet-stream"
        if candidate.suffix == ".wasm":
            kind = "application/wasm"
        self._send(200, kind, candidate.read_bytes())

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        connection = http.client.HTTPConnection("127.0.0.1", self.server.orthanc_port, timeout=120)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class _OhifHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, dist: Path, orthanc_port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.dist = dist.resolve()
        self.orthanc_port = orthanc_port
        self.app_config = ohif_app_config(f"http://127.0.0.1:{port}")


class OhifServer:
    """OHIF's ``dist/`` and Orthanc's DICOMweb on one loopback origin (a thread of this process)."""

    def __init__(self, dist: Path, orthanc_port: int) -> None:
        if not (dist / "index.html").is_file():
            raise FileNotFoundError(f"no OHIF build in {dist} (make viewer-tools)")
        self._server = _OhifHttpServer(free_port(), dist, orthanc_port)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> OhifServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
