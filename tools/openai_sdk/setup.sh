#!/usr/bin/env bash
# Makes tools/openai_sdk/.venv with OpenAI's official Python SDK, pinned, for the tests that run
# `check.py` against `kyutai serve` (tests/server_openai_sdk.rs). Run by tools/setup.sh; safe to
# run again (it does nothing when the pinned version is already there).
set -euo pipefail
cd "$(dirname "$0")"
OPENAI_VERSION="3.63.0"
if [ -x .venv/bin/python ] && .venv/bin/python -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
    exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check "openai==$OPENAI_VERSION"
.venv/bin/python -c "import openai; print('openai_sdk: openai', openai.__version__, 'in tools/openai_sdk/.venv')"
