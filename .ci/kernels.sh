#!/usr/bin/env bash
# Prepare the kernels the kernel tests (tests/test_kernel.py, marker "kernel") run against.
#
# - "python3": the kernel of the current environment (ipykernel 7 in CI); it must exist.
# - "ipybgfetch-ipk6": a venv (outside the repo, so ruff/pytest/git never see it) with
#   ipykernel>=6,<7 installed in it, that sees the packages of the environment running this
#   script (IPython, httpx, anywidget, ...) through a .pth file listing that environment's
#   site-packages, plus this checkout on its path. That works the same from the system
#   Python and from an activated virtualenv (whose packages `venv --system-site-packages`
#   would not see: it exposes the base interpreter's site-packages, not the venv's).
#
# Usage:  .ci/kernels.sh            # create/refresh the ipk6 one, print the kernelspec list
#         .ci/kernels.sh --remove   # unregister the ipk6 kernelspec and delete the venv
# Env:    PYTHON (default: the `python` on PATH: the activated venv's, else python3)
#         IPK6_VENV (default: ${XDG_CACHE_HOME:-~/.cache}/ipybgfetch/venv-ipk6)
#         IPK6_NAME (default: ipybgfetch-ipk6)
# Then:   python -m pytest -m kernel tests/test_kernel.py
#
# Idempotent: re-running reuses the venv. If ipykernel 6 cannot be installed (no network),
# the script warns and exits 0: the ipykernel 6 tests are then reported as skipped (with the
# reason) and the others run against ipykernel 7.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
VENV="${IPK6_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ipybgfetch/venv-ipk6}"
NAME="${IPK6_NAME:-ipybgfetch-ipk6}"

if [[ "${1:-}" == "--remove" ]]; then
    jupyter kernelspec remove -f "$NAME" 2>/dev/null || true
    rm -rf "$VENV"
    exit 0
fi

# "python3" needs nothing: jupyter_client always provides the current environment's kernel.

# The ipykernel 6 venv: its own site-packages first (ipykernel 6 there shadows the
# environment's ipykernel 7), then the running environment's, named by a .pth file.
if [[ ! -x "$VENV/bin/python" ]]; then
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$PYTHON" - > "$site/ipybgfetch-env.pth" <<'PY'
import site, sys, sysconfig
paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
paths += site.getsitepackages()
if site.ENABLE_USER_SITE:
    paths.append(site.getusersitepackages())
seen = set()
for p in paths:
    if p not in seen:
        seen.add(p)
        print(p)
PY
if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "ipykernel>=6,<7"; then
    echo "kernels.sh: WARNING: could not install ipykernel 6; kernel tests run on" \
         "ipykernel $("$PYTHON" -c 'import ipykernel; print(ipykernel.__version__)') only" >&2
    exit 0
fi
# ipybgfetch itself: this checkout on the venv's path (a .pth file, like an editable install
# without a build step); its dependencies come from the environment's site-packages.
echo "$here" > "$site/ipybgfetch-dev.pth"

version="$("$VENV/bin/python" -c 'import ipykernel; print(ipykernel.__version__)')"
case "$version" in
    6.*) ;;
    *) echo "kernels.sh: expected ipykernel 6 in $VENV, got $version" >&2; exit 1 ;;
esac
"$VENV/bin/python" -c 'import httpx, anywidget, ipybgfetch._jupyter.magic' || {
    echo "kernels.sh: ipybgfetch (or its dependencies) is not importable from $VENV" >&2
    exit 1; }
"$VENV/bin/python" -m ipykernel install --user --name "$NAME" \
    --display-name "Python 3 (ipykernel $version, ipybgfetch tests)" >/dev/null

jupyter kernelspec list
