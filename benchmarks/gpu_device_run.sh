#!/usr/bin/env bash
# Every GPU measurement in one call on the lent device machine (benchmarks/bench_gpu.py).
#
# That machine has Python 3.12 and torch 2.11 (CUDA) but no registry and no torchrec: the
# wheels in .gpuwheels/ (ignored by git, carried with the call) are installed into a scratch
# folder with --no-deps --no-index. Ray cannot be carried (too large), and nothing on this
# path imports it. Results: $OUT/bench_gpu.json, bench_gpu.txt (the tables), bench_gpu.log.
#
#   .gpuwheels/: torchrec-1.6.1, tensordict-0.15.3, pyvers-0.2.3, iopath-0.1.9, and torchrec's
#   pure-Python imports pyre-extensions-0.0.32, typing-inspect-0.9.0, mypy_extensions-1.2.0,
#   cloudpickle-3.1.2 (cp312 / py3 wheels, `pip download --no-deps --python-version 3.12`).
#   fbgemm's CUDA build (fbgemm_gpu-1.6.0-cp312-cp312-manylinux_2_28_x86_64.whl, 465 MB, linked
#   against the device's CUDA 13 torch 2.11) is too big for one call (64 MiB): carried in pieces,
#   each by a call of its own that moves it to /tmp/fbg/ on the warm machine
#   (`mkdir -p /tmp/fbg && mv .fbg/zNN /tmp/fbg/`), joined here. Three pieces, not nine, when the
#   wheel's contents go as one zstd stream (a zip compresses each file alone; zstd's long window
#   finds what the kernels of several GPU architectures share: 163 MB):
#     unzip -d w WHEEL && tar -C w -cf - . | zstd -19 --long=27 -o fbg.tar.zst
#     split -b 55M -d -a 2 fbg.tar.zst .fbg/z
#   with zstd itself in .fbg/bin/ (the binary and its liblz4.so.1; the device has no zstd), carried
#   with the first piece. The wheel split as it is (`split -b 50M -d -a 2 WHEEL .fbg/p`, nine
#   pieces in /tmp/fbg/pNN) works too. Without either, fbgemm_gpu_cpu-1.6.0 in .gpuwheels/ (the
#   CPU build: torchrec's plain tables run on CUDA with it, fused tables fall back to dense ones
#   with a warning).
#
# Usage there: bash benchmarks/gpu_device_run.sh [bench_gpu.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench_out/gpu}"
SITE="${RK_GPU_SITE:-/tmp/rk-gpu-site}"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
mkdir -p "$OUT"
exec > >(tee "$OUT/bench_gpu.log") 2>&1

shopt -s nullglob
wheels=(.gpuwheels/*.whl)
if [ ${#wheels[@]} -eq 0 ]; then
    echo "no wheels in .gpuwheels/: carry it with the call (see the header of $0)" >&2
    exit 2
fi
started=$(date +%s)
packed=(/tmp/fbg/z*)
if [ ${#packed[@]} -gt 0 ] && [ ! -d "$SITE/fbgemm_gpu" ]; then
    ZSTD="$(command -v zstd || echo /tmp/fbg/bin/zstd)"
    mkdir -p "$SITE"
    cat "${packed[@]}" | LD_LIBRARY_PATH="/tmp/fbg/bin:${LD_LIBRARY_PATH:-}" "$ZSTD" -d --long=27 -q | tar -x -C "$SITE"
    echo "fbgemm_gpu unpacked from ${#packed[@]} zstd pieces in $(( $(date +%s) - started )) s"
fi
pieces=(/tmp/fbg/p*)
if [ ${#pieces[@]} -gt 0 ]; then
    cat "${pieces[@]}" > /tmp/fbgemm_gpu-1.6.0-cp312-cp312-manylinux_2_28_x86_64.whl
    wheels+=(/tmp/fbgemm_gpu-1.6.0-cp312-cp312-manylinux_2_28_x86_64.whl)
fi
if "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --no-deps --no-index --upgrade --target "$SITE" "${wheels[@]}"
else  # no pip there: a wheel is a zip of what goes into site-packages
    "$PY" - "$SITE" "${wheels[@]}" <<'EOF'
import sys, zipfile
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])
EOF
fi
export PYTHONPATH="$SITE:$PWD"
export PYTHONUNBUFFERED=1
echo "installed ${#wheels[@]} wheels into $SITE in $(( $(date +%s) - started )) s"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
"$PY" - <<'EOF'
import warnings
warnings.filterwarnings("ignore")
import torch, fbgemm_gpu, torchrec
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, available {torch.cuda.is_available()}); "
      f"torchrec from {torchrec.__file__}")
EOF
"$PY" -m benchmarks.bench_gpu --out "$OUT" "$@"
