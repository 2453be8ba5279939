# wbdwi-node container image.
#
# Two stages from the same base: "build" creates a virtual environment in
# /opt/wbdwi/venv with the project (and CuPy for the GPU path); the final stage
# holds only the Python runtime and that venv, and runs as a non-root user.
#
# The base is an NVIDIA CUDA 12 runtime image by default. Python comes from the
# distribution's packages, so the same file also builds on a plain Debian
# bookworm base (make image-test does that with a debootstrapped stand-in):
#   docker build -t wbdwi-node .
#   podman build --build-arg BASE_IMAGE=localhost/wbdwi-base:bookworm \
#                --build-arg WITH_GPU=0 -t wbdwi-node .
# Behind a proxy or a private package index, pass pip's settings as build
# arguments (they exist only while the build stage runs):
#   --build-arg PIP_INDEX_URL=https://pypi.example.org/simple
#
# Without a visible GPU (or with WITH_GPU=0) the node runs on the CPU path.
#
# Note on the default base: Ubuntu 22.04's python3.11 package is 3.11.0~rc1
# (a release candidate, also in jammy-updates). The Ubuntu 24.04 flavour gets
# Python 3.12.3 from its python3 package and builds unchanged:
#   --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04

ARG BASE_IMAGE=nvidia/cuda:12.4.1-runtime-ubuntu22.04

FROM ${BASE_IMAGE} AS build

ARG DEBIAN_FRONTEND=noninteractive
# 1: install the "gpu" extra (cupy-cuda12x[ctk]: CuPy with the NVRTC and cuFFT it loads at
# run time; the image's CUDA runtime has them too, the driver comes from the host); 0: CPU-only image.
ARG WITH_GPU=1
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_FIND_LINKS=""
ARG PIP_TRUSTED_HOST=""
ARG PIP_CERT=""
ARG PIP_DEFAULT_TIMEOUT=""
ARG PIP_RETRIES=""

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Python >= 3.11 from the distribution: Ubuntu 22.04 ships it as python3.11
# (python3 is 3.10 there); Debian bookworm has both names for 3.11; elsewhere
# python3. The venv is made from the versioned binary (/usr/bin/python3.X),
# which is all the final stage needs. Package versions follow the base
# image's distribution, hence no pins (DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
 && if apt-cache show --no-all-versions python3.11-venv >/dev/null 2>&1; then py=python3.11; else py=python3; fi \
 && apt-get install -y --no-install-recommends ca-certificates "${py}" "${py}-venv" \
 && rm -rf /var/lib/apt/lists/* \
 && python_exe="$(readlink -f "$(command -v "${py}")")" \
 && "${python_exe}" -m venv /opt/wbdwi/venv \
 && /opt/wbdwi/venv/bin/python -c 'import sys; assert sys.version_info >= (3, 11), sys.version'

ENV PATH=/opt/wbdwi/venv/bin:$PATH

# Dependencies first, from pyproject.toml alone, so that a change to the code
# does not reinstall them. pip ignores the pip build arguments left empty.
COPY pyproject.toml /src/pyproject.toml
RUN python -c 'import sys, tomllib; \
project = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]; \
requirements = list(project["dependencies"]); \
requirements += project["optional-dependencies"]["gpu"] if sys.argv[1] == "1" else []; \
print("\n".join(requirements))' "${WITH_GPU}" > /src/requirements.txt \
 && python -m pip install --no-cache-dir --upgrade "pip>=25.1" \
 && python -m pip install --no-cache-dir --requirement /src/requirements.txt

COPY README.md /src/README.md
COPY processing /src/processing
COPY dicom_node /src/dicom_node
COPY service /src/service
RUN python -m pip install --no-cache-dir --no-deps /src \
 && python -m pip check \
 && wbdwi --version


FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

LABEL org.opencontainers.image.title="wbdwi-node" \
      org.opencontainers.image.description="DICOM node for whole-body diffusion-weighted MRI: ADC, computed high-b, tumour load, results back to PACS"

# The interpreter the venv was made with (python3.X, read from its
# pyvenv.cfg), without the venv tooling; a system user with a fixed UID owns
# the data folder.
COPY --from=build /opt/wbdwi/venv/pyvenv.cfg /opt/wbdwi/venv/pyvenv.cfg
# hadolint ignore=DL3008
RUN python_version="$(sed -n 's/^version *= *\([0-9]*\.[0-9]*\).*/\1/p' /opt/wbdwi/venv/pyvenv.cfg)" \
 && test -n "${python_version}" \
 && apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates "python${python_version}" \
 && rm -rf /var/lib/apt/lists/* \
 && test -x "/usr/bin/python${python_version}" \
 && groupadd --system --gid 10001 wbdwi \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/wbdwi \
            --no-create-home --shell /usr/sbin/nologin wbdwi \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/wbdwi

COPY --from=build /opt/wbdwi/venv /opt/wbdwi/venv

ENV PATH=/opt/wbdwi/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WBDWI_NODE_DATA_DIR=/var/lib/wbdwi

# Spool, job store and results: keep this on a persistent volume.
VOLUME ["/var/lib/wbdwi"]
WORKDIR /var/lib/wbdwi
USER 10001:10001

# DICOM (C-ECHO, C-STORE, MPPS) and HTTP (/healthz, /readyz, /metrics).
# Configure the node with WBDWI_<SECTION>_<KEY> variables (WBDWI_NODE_AE_TITLE,
# WBDWI_EXPORT_DESTINATIONS, ...) or a TOML file named by WBDWI_CONFIG.
EXPOSE 11112 8080

# Asks the node over loopback; set a non-default HTTP port with
# WBDWI_NODE_HTTP_PORT (not only in a TOML file) so that this check finds it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('WBDWI_NODE_HTTP_PORT', '8080') + '/healthz', timeout=4).close()"]

ENTRYPOINT ["wbdwi", "serve"]
