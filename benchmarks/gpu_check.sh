#!/usr/bin/env bash
# make gpu-check: set up the project on a GPU host, then run benchmarks/gpu_check.py.
#
# Python: .venv/bin/python when this checkout has one, else $PYTHON or python3 (a lent GPU
# machine starts bare: its image's python3 already holds NumPy, SciPy, pytest and a CuPy).
# Install:
#   - CuPy already importable: the project alone (pip install -e .), keeping that CuPy
#     (it may be built for another CUDA major version than the gpu extra's cupy-cuda12x);
#   - else the gpu extra: pip install -e '.[gpu]' (cupy-cuda12x[ctk]: NVRTC and cuFFT too).
#   Offline (nothing can be fetched): the wheels in .whl/ that `make gpu-wheels` put there
#   on a connected machine (carry .whl along) go into a folder of their own on PYTHONPATH,
#   and dcmtk's storescu/storescp come from .whl/dcmtk-bundle.tar.xz when the host has none.
# Then WBDWI_REQUIRE_GPU=1: a GPU test that would skip fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -x .venv/bin/python ]]; then
    python=.venv/bin/python
else
    python=${PYTHON:-python3}
fi
echo "gpu-check: python $("$python" -c 'import sys; print(sys.executable, sys.version.split()[0])')"

pip_quiet=(-m pip install --quiet --disable-pip-version-check)
if "$python" -c 'import cupy' 2>/dev/null; then
    target=.
    echo "gpu-check: CuPy $("$python" -c 'import cupy; print(cupy.__version__)') is there; installing the project without the gpu extra"
else
    target='.[gpu]'
fi
if ! "$python" "${pip_quiet[@]}" --retries 1 --timeout 10 -e "$target" 2>/tmp/wbdwi-gpu-check-pip.log; then
    echo "gpu-check: online install failed ($(tail -n 1 /tmp/wbdwi-gpu-check-pip.log)); using the wheels in .whl/"
    if ! compgen -G '.whl/*.whl' >/dev/null; then
        echo "gpu-check: no wheels in .whl/: run 'make gpu-wheels' on a connected machine and carry .whl" >&2
        exit 1
    fi
    # Into a folder of their own, put first on the path: the host's packages stay as they are
    # (the project itself is used from this checkout, which needs no build step).
    site=${TMPDIR:-/tmp}/wbdwi-gpu-site
    rm -rf "$site"
    "$python" "${pip_quiet[@]}" --no-index --no-deps --no-compile --target "$site" .whl/*.whl
    export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! command -v storescu >/dev/null || ! command -v storescp >/dev/null; then
    if [[ -f .whl/dcmtk-bundle.tar.xz ]]; then
        tools=${TMPDIR:-/tmp}/wbdwi-gpu-dcmtk
        rm -rf "$tools" && mkdir -p "$tools"
        tar -C "$tools" -xJf .whl/dcmtk-bundle.tar.xz
        export PATH="$tools/dcmtk/bin:$PATH"
        echo "gpu-check: dcmtk from .whl/dcmtk-bundle.tar.xz: $(storescu --version | head -n 1)"
    else
        echo "gpu-check: no dcmtk here (storescu, storescp): the latency rows will fail" >&2
    fi
fi
if ! "$python" -c 'import cupy' 2>/dev/null && [[ " $* " != *" --without-gpu "* ]]; then
    echo "gpu-check: CuPy is not importable; install the gpu extra (pip install -e '.[gpu]')" >&2
    exit 1
fi
export WBDWI_REQUIRE_GPU=1 PYTHONUNBUFFERED=1
exec "$python" -m benchmarks.gpu_check "$@"
