#!/usr/bin/env bash
# One-command set-up for a fresh machine: checks the Rust toolchain and the few system tools the
# tests use, installs what is missing (Debian/Ubuntu), and builds everything the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: installing the Rust toolchain with rustup" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi

# `script` (util-linux) gives the progress-bar test a pseudo-terminal.
if ! command -v script >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq bsdutils
    else
        echo "setup: please install util-linux's \`script\` command" >&2
        exit 1
    fi
fi

# libopus for the server's Opus formats (the `opus` feature, tested by CI beside the default
# build); optional: without it only `--features opus` fails to build.
if ! pkg-config --exists opus 2>/dev/null && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libopus-dev pkg-config \
        || echo "setup: libopus-dev not installed (only the opus feature needs it)" >&2
fi

# Debian's Chromium, for the browser test of the server's page (tests/server_page.rs).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium
fi

# OpenAI's official Python SDK, pinned, in tools/openai_sdk/.venv (tests/server_openai_sdk.rs).
if ! python3 -c "import venv, ensurepip" >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv
fi
tools/openai_sdk/setup.sh

cargo build --locked --all-targets
echo "setup: done; run the tests with: cargo test --locked" >&2
