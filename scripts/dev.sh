#!/usr/bin/env bash
# Quick start: sets everything up and runs the token authority, encryptor and decryptor on
# 127.0.0.1 with a generated development keyring. Ctrl-C stops them all.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
exec .venv/bin/kamus-dev up "$@"
