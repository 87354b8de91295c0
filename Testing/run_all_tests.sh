#!/usr/bin/env bash
# Install, lint (ruff check + ruff format --check) and run every test: the README's second Quick-start command,
# and what .ci/run does.
#   1. the whole suite in .venv (slicer-core: the bare MRML scene);
#   2. the Slicer-logic tests again in a Slicer application scene (trame-slicer's SlicerApp) in .venv-slicerapp,
#      a venv of its own because trame-slicer's standalone extra pins slicer-core 5.11 / vtk 9.6.0.
# torch is pinned in each install command on purpose: an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
# headless Chromium renders the demo page in test_demo_page.py (Debian's package; installed only when missing)
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } ||
    echo "chromium could not be installed: the demo-page browser test will be skipped" >&2
fi
python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0 -e ".[test]"
# lint and formatting (rules in pyproject.toml): any finding fails before the tests run
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -p no:cacheprovider "$@"
python3 -m venv .venv-slicerapp
.venv-slicerapp/bin/pip install -q torch==2.13.0 -e ".[test,slicerapp]"
.venv-slicerapp/bin/python -m pytest -p no:cacheprovider -k slicer_app "$@"
