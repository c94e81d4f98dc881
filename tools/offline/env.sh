# Sourced on the GPU host from the project's root (docs/gpu.md; `make offline` puts it in .offline/): unpacks the
# carried dependencies once, points the project at them and at the carried data, and says which device it will use.
# Python with torch must be the host's python3 (or $SYNTHBOOST_PYTHON), of the version the bundle was built for.
# Without a CUDA device it warns and goes on (the same commands run on CPU tensors: a dry run on any machine);
# SYNTHBOOST_REQUIRE_CUDA=1 makes that an error instead.
_off="$(pwd)/.offline"
_py="${SYNTHBOOST_PYTHON:-python3}"
_site="${SYNTHBOOST_SITE:-${TMPDIR:-/tmp}/synthboost-site}"
if [ ! -f "$_site/site/.unpacked" ] || [ "$_off/site.tar.xz" -nt "$_site/site/.unpacked" ]; then
  rm -rf "$_site/site" && mkdir -p "$_site" && tar -xJf "$_off/site.tar.xz" -C "$_site" && touch "$_site/site/.unpacked"
fi
export PYTHONPATH="$_site/site:$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
export SYNTHBOOST_DATA="$_off/data" OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
"$_py" - "$(cat "$_site/site/PYTHON_VERSION" 2>/dev/null)" <<'PY'
import os, sys
want = sys.argv[1]
have = "%d.%d" % sys.version_info[:2]
if want and have != want:
    sys.exit(f"error: the bundle is for Python {want}, this python is {have} (set SYNTHBOOST_PYTHON, or rebuild with OFFLINE_PYTHON={have} make offline)")
import torch
if torch.cuda.is_available():
    print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| Python", have)
elif os.environ.get("SYNTHBOOST_REQUIRE_CUDA") == "1":
    sys.exit("error: no CUDA device (SYNTHBOOST_REQUIRE_CUDA=1)")
else:
    print("warning: no CUDA device: everything runs on the CPU | torch", torch.__version__, "| Python", have)
PY
