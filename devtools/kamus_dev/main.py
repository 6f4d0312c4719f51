"""`kamus-dev`: the whole Kamus on 127.0.0.1 for development, and tokens to try it with.

``kamus-dev up`` runs the development token authority (a stand-in of the Kubernetes API) in this
process and the encryptor and decryptor as real gunicorn processes in development mode, which
generate their keys into the state folder. ``kamus-dev token`` mints a pod token from that
authority, as the kubelet would project it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import requests
from werkzeug.serving import make_server

from kamus_client.coredumps import forbid_core_dumps
from kamus_dev.authority import TokenAuthority, create_authority_app
from kamus_dev.kubeconfig import mint_token, write_kubeconfig
from kamus_dev.tokens import load_or_create_signing_key
from kamus_kms.privatefile import write_private
from kamus_service.keys import dev_audit_key, dev_keyring

HOST = "127.0.0.1"
STATE_FILE = "authority.json"
LOCK_FILE = "kamus-dev.lock"
_READY_TIMEOUT = 60.0
_PR_SET_PDEATHSIG = 1


class _Stopped(Exception):
    """A signal asked kamus-dev to stop (SIGTERM, SIGHUP: a closed terminal)."""


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signal.Signals(signum).name)


def _die_with_parent() -> None:
    """In a service process before it runs (Linux): end it with SIGTERM if kamus-dev dies, even
    by SIGKILL, so no gunicorn is left holding a port."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _lock_state(state: Path) -> int:
    """Hold the state folder for this `kamus-dev up`, or exit at once, changing nothing in it."""
    fd = os.open(state / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise SystemExit(
            f"kamus-dev: {state} is in use by another `kamus-dev up` (pid {holder}); stop it, or"
            " give this one its own folder with --dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _service_command(app: str, port: int, workers: int) -> list[str]:
    # The services' own configuration (kamus_service/gunicorn_conf.py) on a loopback port; the
    # environment turns SO_REUSEPORT off (a second `kamus-dev up` must fail on the taken port,
    # not share it).
    return [
        sys.executable, "-m", "gunicorn", "-c", "python:kamus_service.gunicorn_conf",
        "--bind", f"{HOST}:{port}", "--workers", str(workers), "--graceful-timeout", "5", app,
    ]  # fmt: skip


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"kamus-dev: the service behind {url} exited; see its output above")
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass  # not up yet, or slow to answer under load: try again until the deadline
        time.sleep(0.1)
    raise SystemExit(f"kamus-dev: {url} was not ready within {_READY_TIMEOUT:.0f} s")


def _instructions(keys: str, state: Path, authority: str, encryptor: str, decryptor: str) -> str:
    return f"""
Kamus is running in DEVELOPMENT MODE: {keys} {state}/ (never use them in production)
  token authority  {authority}
  encryptor        {encryptor}
  decryptor        {decryptor}

Encrypt a secret for namespace team-a, service account app:
  .venv/bin/kamus-cli encrypt -s 's3cr3t' -n team-a -a app -u {encryptor} --allow-insecure-url > secret.kamus
or in a browser: {encryptor}/

Get a pod token for team-a/app (audience kamus), as the kubelet would project it:
  .venv/bin/kamus-dev token -n team-a -a app --dir {state} > token

Decrypt as that pod:
  curl -s -H "Authorization: Bearer $(cat token)" -H 'Content-Type: application/json' \\
       -d "{{\\"data\\": \\"$(cat secret.kamus)\\"}}" {decryptor}/api/v1/decrypt

Or as the init container does (writes out/password, mode 0400):
  mkdir -p in out && cp secret.kamus in/password
  KAMUS_URL={decryptor} TOKEN_FILE_PATH=token .venv/bin/kamus-init -e in -d out -f files

Audit events and request logs follow below as JSON lines. Ctrl-C stops everything.
"""  # noqa: E501


def up(args: argparse.Namespace) -> int:
    """Run the token authority, encryptor and decryptor until interrupted."""
    state: Path = args.dir.resolve()
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = _lock_state(state)  # held until this process ends
    authority = TokenAuthority(
        signing_key=load_or_create_signing_key(state / "authority-key.pem"),
        kubernetes_version=args.kubernetes_version,
    )
    server = make_server(HOST, args.authority_port, create_authority_app(authority), threaded=True)
    authority_url = f"http://{HOST}:{server.port}"

    kubeconfig = state / "kubeconfig"
    write_kubeconfig(kubeconfig, authority_url, authority.admin_token)
    state_file = json.dumps({"url": authority_url, "admin_token": authority.admin_token})
    write_private(state / STATE_FILE, state_file.encode("utf-8"))

    # kamus-dev makes the development keys itself and says so once, here; the services then
    # load them as files, exactly as in production, and print nothing about them.
    keyring, audit_key = state / "keyring.json", state / "audit.key"
    created = {"keyring": dev_keyring(keyring), "audit key": dev_audit_key(audit_key)}
    made = [name for name, new in created.items() if new]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAMUS_")}
    env |= {
        "KAMUS_KEYRING_FILE": str(keyring),
        "KAMUS_AUDIT_KEY_FILE": str(audit_key),
        "KAMUS_REUSE_PORT": "false",
        "PYTHONUNBUFFERED": "1",
    }
    services = {
        "encryptor": ("kamus_encryptor:create_app()", args.encryptor_port, {}),
        "decryptor": ("kamus_decryptor:create_app()", args.decryptor_port,
                      {"KAMUS_KUBECONFIG": str(kubeconfig)}),
    }  # fmt: skip
    processes: dict[str, subprocess.Popen[bytes]] = {}
    urls: dict[str, str] = {}

    def stop() -> None:
        # Signals are ignored from here on: a second Ctrl-C must not cut the stop short.
        for stopping in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(stopping, signal.SIG_IGN)
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=15)  # gunicorn's graceful timeout (5 s) and some
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        server.shutdown()
        server.server_close()
        os.close(lock)

    # SIGINT too: a shell script starting kamus-dev in the background leaves SIGINT ignored, and
    # Python then never raises KeyboardInterrupt; Ctrl-C must stop it all the same.
    for stopping in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stopping, _raise_stopped)
    try:
        for name, (app, port, extra) in services.items():
            command = _service_command(app, port, args.workers)
            # Sessions of their own: a terminal's signals (Ctrl-C, the hang-up of closing it)
            # reach kamus-dev only, which stops the services in order; gunicorn would take a
            # SIGHUP as "reload" and live on.
            processes[name] = subprocess.Popen(  # noqa: S603
                command, env=env | extra, start_new_session=True, preexec_fn=_die_with_parent,  # noqa: PLW1509
            )  # fmt: skip
            urls[name] = f"http://{HOST}:{port}"
        # Started after the services: preexec_fn must not run while another thread exists.
        threading.Thread(target=server.serve_forever, daemon=True, name="authority").start()
        for name, url in urls.items():
            _wait_ready(url, processes[name])
        keys = f"generated a new {' and '.join(made)} into" if made else "using the keys in"
        print(_instructions(keys, state, authority_url, urls["encryptor"], urls["decryptor"]),
              flush=True)  # fmt: skip
        while all(process.poll() is None for process in processes.values()):
            time.sleep(0.2)
    except (KeyboardInterrupt, _Stopped):
        return 0
    finally:
        stop()
    print("kamus-dev: a service exited; stopped the others", file=sys.stderr)
    return 1


def _running_authority(folder: Path) -> dict[str, str] | None:
    """The URL and admin token of the authority `kamus-dev up` runs for ``folder``."""
    try:
        state: dict[str, str] = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        print(f"kamus-dev: no running authority found in {folder}; run `kamus-dev up` first",
              file=sys.stderr)  # fmt: skip
        return None
    return state


def objects(args: argparse.Namespace) -> int:
    """Create or delete a pod object or a service account in the running authority."""
    state = _running_authority(args.dir)
    if state is None:
        return 1
    collection = f"{state['url']}/api/v1/namespaces/{args.namespace}/{args.resource}"
    headers = {"Authorization": f"Bearer {state['admin_token']}"}
    try:
        if args.action == "create":
            kind = "Pod" if args.resource == "pods" else "ServiceAccount"
            manifest = {"apiVersion": "v1", "kind": kind, "metadata": {"name": args.name}}
            response = requests.post(collection, json=manifest, headers=headers, timeout=10)
        else:
            response = requests.delete(f"{collection}/{args.name}", headers=headers, timeout=10)
    except requests.RequestException as exc:
        print(f"kamus-dev: {exc}", file=sys.stderr)
        return 1
    if response.status_code not in (200, 201):
        print(f"kamus-dev: {response.json().get('message', response.reason)}", file=sys.stderr)
        return 1
    metadata = response.json()["metadata"]
    print(
        f"{args.action}d {args.resource[:-1]} {args.namespace}/{args.name} (uid {metadata['uid']})"
    )
    return 0


def token(args: argparse.Namespace) -> int:
    """Print a token minted by the running authority."""
    state = _running_authority(args.dir)
    if state is None:
        return 1
    try:
        minted = mint_token(
            state["url"], state["admin_token"], args.namespace, args.service_account,
            args.audience or ["kamus"], expiration_seconds=args.expiration_seconds, pod=args.pod,
        )  # fmt: skip
    except requests.RequestException as exc:
        print(f"kamus-dev: {exc}", file=sys.stderr)
        return 1
    print(minted)
    return 0


def _version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not MAJOR.MINOR, e.g. 1.28")
    return int(major), int(minor)


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    top = argparse.ArgumentParser(prog="kamus-dev", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("up", help="run the authority, encryptor and decryptor locally")
    run.add_argument("--dir", type=Path, default=Path(".kamus-dev"), help="state folder")
    run.add_argument("--authority-port", type=int, default=8440)
    run.add_argument("--encryptor-port", type=int, default=8441)
    run.add_argument("--decryptor-port", type=int, default=8442)
    run.add_argument("--workers", type=int, default=2, help="gunicorn workers per service")
    run.add_argument(
        "--kubernetes-version",
        type=_version,
        default=(1, 29),
        metavar="MAJOR.MINOR",
        help="token shape of this Kubernetes version: from 1.29 tokens carry a jti (a credential "
        "id in the audit); 1.28 and older do not, and two tokens asked for in one second are the "
        "same (default: 1.29)",
    )
    run.set_defaults(handler=up)
    mint = commands.add_parser("token", help="print a pod token from the running authority")
    mint.add_argument("-n", "--namespace", required=True)
    mint.add_argument("-a", "--service-account", required=True)
    mint.add_argument("--audience", action="append", help="repeatable; default: kamus")
    mint.add_argument(
        "--pod", help="bind the token to this pod (create it first: kamus-dev pod create)"
    )
    mint.add_argument("--expiration-seconds", type=int, default=3600)
    mint.add_argument("--dir", type=Path, default=Path(".kamus-dev"), help="state folder")
    mint.set_defaults(handler=token)
    for resource, singular in (("pods", "pod"), ("serviceaccounts", "serviceaccount")):
        command = commands.add_parser(
            singular, help=f"create or delete a {singular} object in the running authority"
        )
        command.add_argument("action", choices=("create", "delete"))
        command.add_argument("name")
        command.add_argument("-n", "--namespace", required=True)
        command.add_argument("--dir", type=Path, default=Path(".kamus-dev"), help="state folder")
        command.set_defaults(handler=objects, resource=resource)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kamus-dev` console script."""
    forbid_core_dumps()  # it holds the authority's signing key and the development keys
    args = parser().parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
