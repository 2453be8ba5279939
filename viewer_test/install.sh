#!/usr/bin/env bash
# Install what `make viewer-test` needs when it is missing:
#  - Debian packages: orthanc, orthanc-dicomweb (DICOMweb for OHIF), orthanc-webviewer
#    (Orthanc's Web Viewer, when the distribution has it), chromium (the browser: the
#    test never downloads one), dcmtk, nodejs/npm when there is no Node.js;
#  - .viewer-cache/node_modules: playwright-core (drives the system Chromium), from
#    viewer_test/package.json and its package-lock.json (npm ci);
#  - .viewer-cache/ohif-<version>/dist: the prebuilt OHIF viewer that the npm package
#    @ohif/app ships, pinned by version and integrity (only its tarball is fetched:
#    its dist/ is self-contained, its npm dependencies are build-time ones).
# Without root or apt-get the missing Debian packages are reported and the test skips;
# under CI=true anything missing is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
OHIF_VERSION=3.13.2
OHIF_INTEGRITY=sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==
CACHE=.viewer-cache
ci=false
case "${CI:-}" in 1 | true | yes) ci=true ;; esac

give_up() {
  echo "viewer-tools: $*" >&2
  if $ci; then exit 1; fi
  exit 0
}

missing=()
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v storescu >/dev/null 2>&1 || missing+=(dcmtk)
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
want_webviewer=false
[ -e /usr/share/orthanc/plugins/libOrthancWebViewer.so ] || want_webviewer=true
if [ ${#missing[@]} -gt 0 ] || $want_webviewer; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    [ ${#missing[@]} -eq 0 ] || give_up "${missing[*]} missing and cannot install (need root and apt-get)"
  else
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    if $want_webviewer && [ -n "$(apt-cache policy orthanc-webviewer 2>/dev/null | awk '/Candidate:/ && $2 != "(none)"')" ]; then
      missing+=(orthanc-webviewer)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
      echo "viewer-tools: installing ${missing[*]}" >&2
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
  fi
fi

mkdir -p "$CACHE"
if ! cmp -s viewer_test/package-lock.json "$CACHE/package-lock.json" || [ ! -d "$CACHE/node_modules/playwright-core" ]; then
  echo "viewer-tools: npm ci (playwright-core, no browser download)" >&2
  cp viewer_test/package.json viewer_test/package-lock.json "$CACHE/"
  # --ignore-scripts: no install script runs (playwright-core has none that downloads).
  (cd "$CACHE" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
    give_up "npm ci failed"
fi

ohif="$CACHE/ohif-$OHIF_VERSION"
if [ ! -f "$ohif/dist/index.html" ]; then
  echo "viewer-tools: fetching @ohif/app@$OHIF_VERSION (prebuilt dist/)" >&2
  rm -rf "$ohif" "$CACHE/pack"
  mkdir -p "$CACHE/pack"
  (cd "$CACHE/pack" && npm pack "@ohif/app@$OHIF_VERSION" --silent >/dev/null) ||
    give_up "npm pack @ohif/app@$OHIF_VERSION failed"
  tarball=$(ls "$CACHE"/pack/*.tgz)
  got=$(python3 -c 'import base64, hashlib, sys; print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tarball")
  [ "$got" = "$OHIF_INTEGRITY" ] || give_up "@ohif/app tarball integrity $got, expected $OHIF_INTEGRITY"
  mkdir -p "$ohif.tmp"
  tar -xzf "$tarball" -C "$ohif.tmp" --strip-components=1 package/dist package/package.json
  mv "$ohif.tmp" "$ohif"
  rm -rf "$CACHE/pack"
fi
