#!/usr/bin/env bash
# make image-test: the check that the Dockerfile builds and the image works.
#
# The Docker engine cannot run on these machines, so the image is built and run
# with rootful podman + buildah + runc from Debian's packages, on a stand-in
# base image: Debian bookworm made with debootstrap from the mirror the
# machine's apt already uses, with the host's CA certificates, imported with
# `podman import`. Then the container runs with host networking on free ports,
# a phantom exam is sent to it from the host with `wbdwi phantom` + `wbdwi
# send`, and the results must reach a real Orthanc (the PACS) on the host,
# checked through its REST API. Last, deploy/systemd/wbdwi.service runs under
# systemd in a container made from the image (the bare-metal layout:
# /opt/wbdwi/venv, user wbdwi) and must process the same exam sandboxed.
# Everything started or created here (containers, Orthanc, temp folders) is
# stopped and removed on exit; only the caches that
# make reruns fast stay: the debootstrap tarball and base rootfs under
# $WBDWI_IMAGE_TEST_CACHE, and the base and built images in podman's storage.
#
# Needs root and apt-get (podman and friends are installed when missing);
# otherwise it says so and skips, except under CI=true where that is a failure.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=bookworm
CACHE_DIR=${WBDWI_IMAGE_TEST_CACHE:-/var/cache/wbdwi-image-test}
BASE_IMAGE=localhost/wbdwi-base:${SUITE}
IMAGE=localhost/wbdwi-node:image-test
HOST_BIN=${WBDWI_HOST_BIN:-$REPO/.venv/bin}
RESULTS_TIMEOUT_S=${WBDWI_IMAGE_TEST_RESULTS_TIMEOUT:-600}
# 1 builds the GPU variant (CuPy installed); with no GPU here the node must
# still come up on the CPU path.
WITH_GPU=${WBDWI_IMAGE_TEST_WITH_GPU:-0}
NODE_AET=WBDWI
PACS_AET=ORTHANC
# What the node must deliver into the input's study (SOP Class UIDs, PS3.4 B.5):
# ADC Parametric Map, derived MR images (ADC, computed b), SEG, the TID 1500
# report (Enhanced / Comprehensive / Comprehensive 3D SR), key images.
EXPECTED_RESULTS='Parametric Map=1.2.840.10008.5.1.4.1.1.30
MR Image=1.2.840.10008.5.1.4.1.1.4
Segmentation=1.2.840.10008.5.1.4.1.1.66.4
Structured Report=1.2.840.10008.5.1.4.1.1.88.22|1.2.840.10008.5.1.4.1.1.88.33|1.2.840.10008.5.1.4.1.1.88.34
Secondary Capture=1.2.840.10008.5.1.4.1.1.7|1.2.840.10008.5.1.4.1.1.7.1|1.2.840.10008.5.1.4.1.1.7.2|1.2.840.10008.5.1.4.1.1.7.3|1.2.840.10008.5.1.4.1.1.7.4'

log() { printf 'image-test: %s\n' "$*" >&2; }
die() {
  log "FAILED: $*"
  exit 1
}

# --- preconditions ---------------------------------------------------------
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  reason="needs root and apt-get (rootful podman, debootstrap)"
  if [ "${CI:-}" = true ]; then
    die "CI=true and image-test cannot run: $reason"
  fi
  log "SKIPPED: $reason"
  exit 0
fi
for tool in python wbdwi; do
  [ -x "$HOST_BIN/$tool" ] || die "$HOST_BIN/$tool not found (run through 'make image-test', which bootstraps .venv)"
done

STARTED=$SECONDS
STEP_STARTED=$SECONDS
TIMINGS=()
step() {
  local now=$SECONDS
  if [ -n "${STEP_NAME:-}" ]; then
    TIMINGS+=("$(printf '%-34s %4ss' "$STEP_NAME" $((now - STEP_STARTED)))")
  fi
  STEP_NAME=$1
  STEP_STARTED=$now
  log "== $1"
}

# --- cleanup of everything this run creates ----------------------------------
WORK=$(mktemp -d /tmp/wbdwi-image-test.XXXXXX)
CONTAINER=wbdwi-image-test-$$
CONTAINER_STARTED=0
UNIT_CONTAINER=wbdwi-image-test-systemd-$$
UNIT_CONTAINER_STARTED=0
ORTHANC_PID=
ROOTFS=

cleanup() {
  local status=$?
  set +e
  if [ "$CONTAINER_STARTED" = 1 ]; then
    if [ "$status" -ne 0 ]; then
      log "node container log (last 60 lines):"
      podman logs --tail 60 "$CONTAINER" >&2 2>&1
    fi
    podman rm --force --volumes --time 10 "$CONTAINER" >/dev/null 2>&1 \
      || log "could not remove container $CONTAINER"
  fi
  if [ "$UNIT_CONTAINER_STARTED" = 1 ]; then
    if [ "$status" -ne 0 ]; then
      log "wbdwi.service journal (last 40 lines):"
      podman exec "$UNIT_CONTAINER" journalctl -u wbdwi --no-pager -n 40 -o cat >&2 2>&1
    fi
    podman rm --force --volumes --time 10 "$UNIT_CONTAINER" >/dev/null 2>&1 \
      || log "could not remove container $UNIT_CONTAINER"
  fi
  if [ -n "$ORTHANC_PID" ] && kill -0 "$ORTHANC_PID" 2>/dev/null; then
    kill -TERM "$ORTHANC_PID"
    for _ in $(seq 50); do
      kill -0 "$ORTHANC_PID" 2>/dev/null || break
      sleep 0.2
    done
    kill -0 "$ORTHANC_PID" 2>/dev/null && kill -KILL "$ORTHANC_PID"
    wait "$ORTHANC_PID" 2>/dev/null
  fi
  if [ "$status" -ne 0 ] && [ -s "$WORK/orthanc.log" ]; then
    log "Orthanc log (last 20 lines):"
    tail -n 20 "$WORK/orthanc.log" >&2
  fi
  if [ -n "$ROOTFS" ]; then
    for mount_point in proc sys dev/pts dev; do
      mountpoint -q "$ROOTFS/$mount_point" && umount -l "$ROOTFS/$mount_point"
    done
  fi
  rm -rf "$WORK"
  if [ "$status" -eq 0 ]; then
    log "PASSED in $((SECONDS - STARTED)) s"
  fi
  exit "$status"
}
trap cleanup EXIT
# A failing command not followed by its own die message still says where.
trap 'log "FAILED: line $LINENO exited with status $?"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. tools ------------------------------------------------------------------
step "install podman, buildah, runc"
missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v newuidmap >/dev/null 2>&1 || missing+=(uidmap)
[ -x /usr/libexec/podman/catatonit ] || command -v catatonit >/dev/null 2>&1 || missing+=(catatonit)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  # runc is named explicitly so that apt does not pick crun, which refuses
  # this machine's cgroup layout.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi
podman --version >&2

# podman's default ulimits exceed what this machine allows, and crun refuses
# its cgroup layout: a containers.conf of our own for this run.
export CONTAINERS_CONF="$WORK/containers.conf"
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
cat >"$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF

# --- 2. stand-in base image ------------------------------------------------------
step "stand-in base image"

# The Debian mirror the host's apt uses for $SUITE (one-line .list and deb822
# .sources files); WBDWI_IMAGE_TEST_MIRROR overrides.
find_mirror() {
  local file
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$file" ] || continue
    awk -v suite="$SUITE" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit }
      }' "$file"
  done
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    awk -v suite="$SUITE" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && enabled != "no" && (" " suites " ") ~ (" " suite " ")) {
          split(uris, u, " "); print u[1]; found = 1
        }
        types = ""; uris = ""; suites = ""; enabled = ""
      }
      /^[ \t]*$/ { flush(); if (found) exit; next }
      /^#/ { next }
      tolower($1) == "types:" { $1 = ""; types = substr($0, 2) }
      tolower($1) == "uris:" { $1 = ""; uris = substr($0, 2) }
      tolower($1) == "suites:" { $1 = ""; suites = substr($0, 2) }
      tolower($1) == "enabled:" { enabled = tolower($2) }
      END { if (!found) flush() }' "$file"
  done
}
MIRROR=${WBDWI_IMAGE_TEST_MIRROR:-$(find_mirror | sed -n 1p)}
[ -n "$MIRROR" ] || die "no apt source for Debian $SUITE found in /etc/apt (set WBDWI_IMAGE_TEST_MIRROR)"
log "mirror: $MIRROR"

# The host's CA certificates go into the base so that pip inside the build
# trusts what the host trusts (a TLS-inspecting egress proxy, a private index).
ca_files=()
while IFS= read -r -d '' file; do ca_files+=("$file"); done \
  < <(find /usr/local/share/ca-certificates -type f -name '*.crt' -print0 2>/dev/null | sort -z)
base_key=$(
  {
    printf '%s\n' "$SUITE" "$MIRROR" "debootstrap-minbase-ca-certificates-v1"
    for file in "${ca_files[@]}"; do
      printf '%s\n' "${file#/usr/local/share/ca-certificates/}"
      cat "$file"
    done
  } | sha256sum | cut -c1-16
)
mkdir -p "$CACHE_DIR"
debs_tarball="$CACHE_DIR/debootstrap-$SUITE.tgz"
rootfs_tarball="$CACHE_DIR/rootfs-$SUITE-$base_key.tar"

current_key=$(podman image inspect --format '{{ index .Labels "org.wbdwi.base-key" }}' "$BASE_IMAGE" 2>/dev/null || true)
if [ "$current_key" = "$base_key" ]; then
  log "cached $BASE_IMAGE ($base_key)"
else
  if [ ! -s "$rootfs_tarball" ]; then
    if [ ! -s "$debs_tarball" ]; then
      log "downloading the $SUITE packages (debootstrap --make-tarball)"
      debootstrap --variant=minbase --include=ca-certificates \
        --make-tarball="$debs_tarball.partial" "$SUITE" "$WORK/download" "$MIRROR" \
        >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap --make-tarball from $MIRROR failed"; }
      mv "$debs_tarball.partial" "$debs_tarball"
    fi
    ROOTFS="$WORK/rootfs"
    log "debootstrap $SUITE into $ROOTFS"
    debootstrap --variant=minbase --include=ca-certificates \
      --unpack-tarball="$debs_tarball" "$SUITE" "$ROOTFS" "$MIRROR" \
      >"$WORK/debootstrap.log" 2>&1 \
      || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap of $SUITE failed"; }
    if [ ${#ca_files[@]} -gt 0 ]; then
      (cd /usr/local/share/ca-certificates && cp --parents "${ca_files[@]#/usr/local/share/ca-certificates/}" "$ROOTFS/usr/local/share/ca-certificates/")
    fi
    chroot "$ROOTFS" update-ca-certificates >/dev/null || die "update-ca-certificates in the stand-in failed"
    printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$ROOTFS/etc/apt/sources.list"
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/tmp/*
    tar --numeric-owner --xattrs -C "$ROOTFS" --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* \
      -cf "$rootfs_tarball.partial" . || die "tar of the stand-in rootfs failed"
    mv "$rootfs_tarball.partial" "$rootfs_tarball"
    rm -rf "$ROOTFS"
    ROOTFS=
    find "$CACHE_DIR" -name "rootfs-$SUITE-*.tar" ! -name "$(basename "$rootfs_tarball")" -delete
  fi
  log "podman import $rootfs_tarball as $BASE_IMAGE"
  podman import --change "LABEL org.wbdwi.base-key=$base_key" --change 'CMD ["/bin/bash"]' \
    "$rootfs_tarball" "$BASE_IMAGE" >/dev/null || die "podman import of the stand-in failed"
fi

# --- 3. build ----------------------------------------------------------------------
step "podman build"

# The host's pip configuration (files and PIP_* environment, as pip itself
# resolves it) becomes build arguments; local folders it names (file:// indexes,
# find-links folders) are mounted read-only into the build at the same path
# (podman build --volume; only this test does that, the Dockerfile does not
# depend on it).
pip_settings=$("$HOST_BIN/python" - <<'PY'
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

out = subprocess.run(
    [sys.executable, "-m", "pip", "config", "list"],
    check=True, capture_output=True, text=True,
).stdout
# Later sources win: [global] in files, then [install], then the environment.
rank = {"global": 0, "install": 1, ":env:": 2}
chosen: dict[str, tuple[int, str]] = {}
for line in out.splitlines():
    scope_key, _, value = line.partition("=")
    scope, _, key = scope_key.rpartition(".")
    if scope not in rank:
        continue
    value = value.strip().strip("'\"")
    if key not in chosen or rank[scope] >= chosen[key][0]:
        chosen[key] = (rank[scope], value)

mounts: set[str] = set()
def local_dir(location: str) -> str | None:
    path = urlparse(location).path if location.startswith("file:") else location
    return path if path.startswith("/") else None

args = {}
for key in ("index-url", "extra-index-url", "find-links"):
    if key not in chosen:
        continue
    kept = []
    for location in chosen[key][1].split():
        path = local_dir(location)
        if path is None:
            kept.append(location)
        elif Path(path).is_dir():
            kept.append(location)
            folder = Path(path)
            # A local PEP 503 index links its files relative to it, often in a
            # folder beside simple/ ("../../files/x.whl"): mount the parent.
            if key != "find-links" and folder.name == "simple":
                folder = folder.parent
            mounts.add(str(folder))
        else:
            print(f"# pip {key} {location}: not a folder on this host, left out", file=sys.stderr)
    if kept:
        args["PIP_" + key.upper().replace("-", "_")] = " ".join(kept)
for key in ("trusted-host", "default-timeout", "timeout", "retries"):
    if key in chosen:
        name = "PIP_DEFAULT_TIMEOUT" if key == "timeout" else "PIP_" + key.upper().replace("-", "_")
        args[name] = chosen[key][1]
if "cert" in chosen:
    # The host's CA certificates are in the stand-in's system bundle.
    args["PIP_CERT"] = "/etc/ssl/certs/ca-certificates.crt"
for name, value in sorted(args.items()):
    print(f"arg\t{name}={value}")
for path in sorted(mounts):
    print(f"mount\t{path}")
PY
) || die "reading the host's pip configuration failed"
build_options=()
while IFS=$'\t' read -r kind value; do
  case $kind in
    arg) build_options+=(--build-arg "$value") ;;
    mount) build_options+=(--volume "$value:$value:ro") ;;
  esac
  log "pip setting for the build: $kind $value"
done <<<"$pip_settings"

podman build --pull=never --network host --format docker --layers \
  --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg WITH_GPU="$WITH_GPU" \
  "${build_options[@]}" \
  --tag "$IMAGE" --file "$REPO/Dockerfile" "$REPO" >"$WORK/build.log" 2>&1 \
  || { tail -n 40 "$WORK/build.log" >&2; die "podman build failed (log above)"; }
# Images of earlier runs that the new build replaced.
podman image prune --force --filter label=org.opencontainers.image.title=wbdwi-node >/dev/null

# --- 4. the image's own checks --------------------------------------------------------
step "image checks"
user=$(podman image inspect --format '{{ .Config.User }}' "$IMAGE")
[ "${user%%:*}" = 10001 ] || die "image user is '$user', expected the fixed UID 10001"
entrypoint=$(podman image inspect --format '{{ json .Config.Entrypoint }}' "$IMAGE")
[ "$entrypoint" = '["wbdwi","serve"]' ] || die "image entrypoint is $entrypoint, expected [\"wbdwi\",\"serve\"]"
healthcheck=$(podman image inspect --format '{{ json .Config.Healthcheck }}' "$IMAGE")
case $healthcheck in *healthz*) ;; *) die "image has no HEALTHCHECK on /healthz (got $healthcheck)" ;; esac
podman run --rm --no-healthcheck --network none --entrypoint wbdwi "$IMAGE" --help >"$WORK/help.txt" 2>&1 \
  || { cat "$WORK/help.txt" >&2; die "'wbdwi --help' fails in the image"; }
podman run --rm --no-healthcheck --network none "$IMAGE" --help >"$WORK/serve-help.txt" 2>&1 \
  || { cat "$WORK/serve-help.txt" >&2; die "'wbdwi serve --help' fails in the image (no serve command yet?)"; }

# --- 5. PACS on the host -------------------------------------------------------------
step "start Orthanc"
command -v Orthanc >/dev/null 2>&1 || "$REPO/tests/install-tools.sh"
command -v Orthanc >/dev/null 2>&1 || die "Orthanc not installed (apt-get install orthanc)"
read -r NODE_PORT NODE_HTTP_PORT PACS_PORT PACS_HTTP_PORT UNIT_PORT UNIT_HTTP_PORT < <("$HOST_BIN/python" - <<'PY'
import socket
socks = []
for _ in range(6):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*(s.getsockname()[1] for s in socks))
PY
)
mkdir -p "$WORK/orthanc-db"
cat >"$WORK/orthanc.json" <<EOF
{
  "Name": "wbdwi-image-test",
  "StorageDirectory": "$WORK/orthanc-db",
  "IndexDirectory": "$WORK/orthanc-db",
  "DicomAet": "$PACS_AET",
  "DicomPort": $PACS_PORT,
  "HttpPort": $PACS_HTTP_PORT,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "DicomCheckCalledAet": true,
  "DicomAlwaysAllowStore": true,
  "DicomModalities": { "wbdwi": ["$NODE_AET", "127.0.0.1", $NODE_PORT] },
  "Plugins": []
}
EOF
Orthanc "$WORK/orthanc.json" >"$WORK/orthanc.log" 2>&1 &
ORTHANC_PID=$!
PACS_URL="http://127.0.0.1:$PACS_HTTP_PORT"
for _ in $(seq 100); do
  "$HOST_BIN/python" -c "import urllib.request; urllib.request.urlopen('$PACS_URL/system', timeout=2)" 2>/dev/null && break
  kill -0 "$ORTHANC_PID" 2>/dev/null || die "Orthanc exited at start"
  sleep 0.2
done
"$HOST_BIN/python" -c "import urllib.request; urllib.request.urlopen('$PACS_URL/system', timeout=2)" \
  || die "Orthanc REST API not answering on $PACS_URL"

# --- 6. the node ------------------------------------------------------------------------
step "start the node container"
# --init: SIGTERM reaches the node. --health-interval disable: there is no
# systemd here to run podman's health timer; the HEALTHCHECK runs once below.
podman run --detach --name "$CONTAINER" --init --network host --read-only \
  --health-interval disable \
  --env WBDWI_NODE_PORT="$NODE_PORT" --env WBDWI_NODE_HTTP_PORT="$NODE_HTTP_PORT" \
  --env WBDWI_NODE_AE_TITLE="$NODE_AET" --env WBDWI_NODE_BIND_ADDRESS=127.0.0.1 \
  --env WBDWI_EXPORT_DESTINATIONS="$PACS_AET@127.0.0.1:$PACS_PORT" \
  --env WBDWI_COMPLETION_QUIET_SECONDS=3 \
  "$IMAGE" >"$WORK/run.log" 2>&1 \
  || { cat "$WORK/run.log" >&2; die "podman run of $IMAGE failed"; }
CONTAINER_STARTED=1
NODE_URL="http://127.0.0.1:$NODE_HTTP_PORT"
healthy=0
for _ in $(seq 120); do
  if "$HOST_BIN/python" -c "import urllib.request; urllib.request.urlopen('$NODE_URL/healthz', timeout=2)" 2>/dev/null; then
    healthy=1
    break
  fi
  [ "$(podman inspect --format '{{ .State.Running }}' "$CONTAINER")" = true ] \
    || die "the node container exited at start"
  sleep 0.5
done
[ "$healthy" = 1 ] || die "no answer from $NODE_URL/healthz within 60 s"
podman healthcheck run "$CONTAINER" >"$WORK/healthcheck.log" 2>&1 \
  || { cat "$WORK/healthcheck.log" >&2; die "the image's HEALTHCHECK fails in the running container"; }
[ "$(podman exec "$CONTAINER" id -u)" = 10001 ] || die "the node does not run as UID 10001"
# No GPU is passed into the container: the node must say at start that it
# runs on the CPU path.
device_line=$(podman logs "$CONTAINER" 2>&1 | grep -m 1 '"processing_device"' || true)
case $device_line in
  *'"device": "cpu"'*) log "node: $device_line" ;;
  *) die "the node's start log does not report the CPU path (processing_device event): '$device_line'" ;;
esac

# --- 7. a phantom exam, scanner side on the host ---------------------------------------------
step "send a phantom exam"
"$HOST_BIN/wbdwi" phantom --out "$WORK/exam" --preset small --seed 7 >"$WORK/phantom.log" 2>&1 \
  || { cat "$WORK/phantom.log" >&2; die "wbdwi phantom failed"; }
"$HOST_BIN/wbdwi" send "$WORK/exam" --host 127.0.0.1 --port "$NODE_PORT" --aet "$NODE_AET" >"$WORK/send.log" 2>&1 \
  || { cat "$WORK/send.log" >&2; die "wbdwi send to the node failed"; }

step "wait for results in Orthanc"
"$HOST_BIN/python" - "$WORK/exam" "$PACS_URL" "$RESULTS_TIMEOUT_S" "$EXPECTED_RESULTS" <<'PY' \
  || die "results did not reach Orthanc (see above)"
import json
import sys
import time
import urllib.request
from pathlib import Path

import pydicom

exam_dir, pacs_url, timeout_s, expected_text = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
expected = {}
for line in expected_text.splitlines():
    name, _, uids = line.partition("=")
    expected[name] = set(uids.split("|"))

study_uids = set()
for path in sorted(Path(exam_dir).rglob("*")):
    if path.is_file():
        try:
            study_uids.add(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        except pydicom.errors.InvalidDicomError:
            continue
if len(study_uids) != 1:
    sys.exit(f"the phantom exam in {exam_dir} holds {len(study_uids)} studies, expected 1")
study_uid = study_uids.pop()


def get(path: str) -> object:
    with urllib.request.urlopen(pacs_url + path, timeout=10) as response:
        return json.load(response)


deadline = time.monotonic() + timeout_s
sop_class_of: dict[str, str] = {}  # Orthanc instance id -> SOP Class UID
found: dict[str, set[str]] = {}
while True:
    for study in get("/studies?expand"):
        uid = study["MainDicomTags"]["StudyInstanceUID"]
        if uid != study_uid:
            sys.exit(f"Orthanc holds study {uid}, not the input's study {study_uid}")
        for series_id in study["Series"]:
            for instance in get(f"/series/{series_id}/instances"):
                if instance["ID"] in sop_class_of:
                    continue
                with urllib.request.urlopen(
                    f"{pacs_url}/instances/{instance['ID']}/metadata/SopClassUid", timeout=10
                ) as response:
                    sop_class_of[instance["ID"]] = response.read().decode()
    found = {}
    for instance_id, sop_class in sop_class_of.items():
        found.setdefault(sop_class, set()).add(instance_id)
    missing = [name for name, uids in expected.items() if not uids & found.keys()]
    if not missing:
        break
    if time.monotonic() > deadline:
        sys.exit(
            f"after {timeout_s:.0f} s Orthanc lacks {', '.join(missing)}; "
            f"it holds {json.dumps({k: len(v) for k, v in sorted(found.items())})}"
        )
    time.sleep(2)
summary = ", ".join(f"{k}: {len(v)}" for k, v in sorted(found.items()))
print(f"image-test: Orthanc holds the results in study {study_uid} ({summary})", file=sys.stderr)
PY

# --- 8. graceful stop ----------------------------------------------------------------------
step "stop the node (SIGTERM)"
podman stop --time 60 "$CONTAINER" >"$WORK/stop.log" 2>&1 || { cat "$WORK/stop.log" >&2; die "podman stop failed"; }
exit_code=$(podman inspect --format '{{ .State.ExitCode }}' "$CONTAINER")
[ "$exit_code" = 0 ] || die "the node exited with status $exit_code on SIGTERM, expected 0 (graceful shutdown)"

# --- 9. the systemd unit, under systemd, on the image's venv -------------------------
# The bare-metal install in a container: systemd as PID 1, the unit file as
# shipped, /opt/wbdwi/venv from the image, a TOML config. The node must start
# sandboxed, process the phantom exam into its results folder (no destination)
# and stop cleanly.
step "systemd unit"
mkdir -p "$WORK/unit"
cp "$REPO/deploy/systemd/wbdwi.service" "$WORK/unit/wbdwi.service"
cat >"$WORK/unit/wbdwi.toml" <<EOF
[node]
data_dir = "/var/lib/wbdwi"
port = $UNIT_PORT
http_port = $UNIT_HTTP_PORT
bind_address = "127.0.0.1"

[completion]
quiet_seconds = 3
EOF
cat >"$WORK/unit/Containerfile" <<EOF
FROM $IMAGE
USER root
RUN apt-get update && apt-get install -y --no-install-recommends systemd systemd-sysv \\
 && rm -rf /var/lib/apt/lists/*
COPY wbdwi.service /etc/systemd/system/wbdwi.service
RUN systemd-analyze verify /etc/systemd/system/wbdwi.service && systemctl enable wbdwi.service
COPY wbdwi.toml /etc/wbdwi/wbdwi.toml
ENTRYPOINT ["/sbin/init"]
EOF
podman build --pull=never --network host --layers --tag "$IMAGE-systemd" "$WORK/unit" >"$WORK/unit-build.log" 2>&1 \
  || { tail -n 30 "$WORK/unit-build.log" >&2; die "building the systemd test image failed (log above)"; }
podman run --detach --name "$UNIT_CONTAINER" --systemd=always --network host "$IMAGE-systemd" \
  >"$WORK/unit-run.log" 2>&1 || { cat "$WORK/unit-run.log" >&2; die "podman run of the systemd test image failed"; }
UNIT_CONTAINER_STARTED=1
UNIT_URL="http://127.0.0.1:$UNIT_HTTP_PORT"
healthy=0
for _ in $(seq 120); do
  if "$HOST_BIN/python" -c "import urllib.request; urllib.request.urlopen('$UNIT_URL/healthz', timeout=2)" 2>/dev/null; then
    healthy=1
    break
  fi
  sleep 0.5
done
[ "$healthy" = 1 ] || die "wbdwi.service: no answer from $UNIT_URL/healthz within 60 s"
main_pid=$(podman exec "$UNIT_CONTAINER" systemctl show --property MainPID --value wbdwi) \
  || die "systemctl show wbdwi failed"
sandbox=$(podman exec "$UNIT_CONTAINER" grep -E '^(Uid|NoNewPrivs|Seccomp|CapEff):' "/proc/$main_pid/status" | tr -s '\t\n' '  ') \
  || die "cannot read /proc/$main_pid/status of wbdwi.service"
for expected in "Uid: 10001 " "NoNewPrivs: 1" "Seccomp: 2" "CapEff: 0000000000000000"; do
  case $sandbox in
    *"$expected"*) ;;
    *) die "wbdwi.service is not sandboxed as the unit says (want '$expected'; got: $sandbox)" ;;
  esac
done
"$HOST_BIN/wbdwi" send "$WORK/exam" --host 127.0.0.1 --port "$UNIT_PORT" --aet "$NODE_AET" >"$WORK/unit-send.log" 2>&1 \
  || { cat "$WORK/unit-send.log" >&2; die "wbdwi send to wbdwi.service failed"; }
results=0
for _ in $(seq "$RESULTS_TIMEOUT_S"); do
  # (the results folder appears with the first result)
  results=$(podman exec "$UNIT_CONTAINER" sh -c 'find /var/lib/wbdwi/results -type f -name "*.dcm" 2>/dev/null | wc -l')
  [ "$results" -gt 0 ] && break
  sleep 1
done
[ "$results" -gt 0 ] || die "wbdwi.service wrote no results into /var/lib/wbdwi/results within $RESULTS_TIMEOUT_S s"
# The read-ahead process (on by default) ran inside the sandbox: the job found images read.
assembled=$(podman exec "$UNIT_CONTAINER" journalctl -u wbdwi -o cat --no-pager | grep '"exam_assembled"' | tail -n 1)
read_ahead=$(printf '%s' "$assembled" | "$HOST_BIN/python" -c 'import json, sys; print(json.loads(sys.stdin.read() or "{}").get("read_ahead", 0))')
[ "${read_ahead:-0}" -gt 0 ] || die "wbdwi.service: no image was read ahead (exam_assembled: ${assembled:-none})"
podman exec "$UNIT_CONTAINER" systemctl stop wbdwi || die "systemctl stop wbdwi failed"
unit_result=$(podman exec "$UNIT_CONTAINER" systemctl show --property Result --property ExecMainStatus wbdwi | tr '\n' ' ')
[ "$unit_result" = "Result=success ExecMainStatus=0 " ] || die "wbdwi.service did not stop cleanly: $unit_result"
log "wbdwi.service: sandboxed ($sandbox), $results result files, $read_ahead images read ahead, stopped with $unit_result"

step "done"
log "timings:"
for line in "${TIMINGS[@]}"; do log "  $line"; done
