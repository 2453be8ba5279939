#!/usr/bin/env bash
# make gpu-check: set up the project on a GPU host, then run benchmarks/gpu_check.py.
#
# Python: .venv/bin/python when this checkout has one, else $PYTHON or python3 (a lent GPU
# machine starts bare: its image's python3 already holds NumPy, SciPy, pytest and a CuPy).
# Install:
#   - CuPy already importable: the project alone (pip install -e .), keeping that CuPy
#     (it may be built for another CUDA major version than the gpu extra's cupy-cuda12x);
#   - else the gpu extra: pip install -e '.[gpu]' (cupy-cuda12x[ctk]: NVRTC and cuFFT too).
#   Offline (nothing can be fetched), from the wheels in .whl/ that `make gpu-wheels` put
#   there on a connected machine (carry .whl along).
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
    echo "gpu-check: online install failed ($(tail -n 1 /tmp/wbdwi-gpu-check-pip.log)); trying the wheels in .whl/"
    if [[ ! -d .whl ]]; then
        echo "gpu-check: no .whl/ folder: run 'make gpu-wheels' on a connected machine and carry .whl" >&2
        exit 1
    fi
    "$python" "${pip_quiet[@]}" --no-index --find-links .whl --no-build-isolation -e "$target"
fi
"$python" -c 'import cupy' || {
    echo "gpu-check: CuPy is not importable; install the gpu extra (pip install -e '.[gpu]')" >&2
    exit 1
}
export WBDWI_REQUIRE_GPU=1 PYTHONUNBUFFERED=1
exec "$python" -m benchmarks.gpu_check "$@"
