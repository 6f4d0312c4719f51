#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: lint, types, unit and integration tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# A real kube-apiserver for the tests that need one (tests/support/kube_apiserver.py): taken from
# ../shared/k8s when that folder exists (bootstrap then installs Debian's etcd); without it, those
# tests are skipped and say how to enable them.
shared_apiserver="$root/../shared/k8s/kube-apiserver.xz"
if [ -z "${KAMUS_TEST_KUBE_APISERVER:-}" ] && [ -f "$shared_apiserver" ]; then
  export KAMUS_TEST_KUBE_APISERVER="$shared_apiserver"
fi
"$root/scripts/bootstrap.sh" --test
cd "$root"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest "$@"
