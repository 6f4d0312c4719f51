"""The ``seal`` command: a Secret manifest or a ``.env`` file → a ConfigMap of ciphertexts plus a
strategic-merge patch that wires ``kamus-init`` into a Deployment (or Pod, StatefulSet, DaemonSet).

The values are encrypted one by one with the encryptor; only ciphertexts, key names and wiring are
printed, never a plaintext. The patch adds the init container, a memory ``emptyDir`` for the
plaintexts, the projected token with the ``kamus`` audience, and the app container's mount.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kamus_cli.connection import add_connection_arguments
from kamus_cli.destinations import add_output_arguments, check_output, emit
from kamus_cli.envfile import parse_env
from kamus_cli.offlinesealing import add_sealing_key_argument, encrypter
from kamus_client import environment
from kamus_client.arguments import paragraph
from kamus_client.errors import InputError
from kamus_client.version import VERSION

URL_ENV = environment.URL
PROJECTED_DIR = "/var/run/secrets/kamus"
ENCRYPTED_MOUNT = "/kamus/encrypted"
DECRYPTED_MOUNT = "/kamus/decrypted"
DEFAULT_DECRYPTOR_URL = "http://kamus-decryptor.kamus.svc"
DEFAULT_MOUNT_PATH = "/secrets"
WORKLOADS = {
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "Pod": "v1",
}
_CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")

EPILOG = """\
input:
  a Secret manifest (YAML or JSON; `data` is base64, `stringData` plain and wins) or a .env
  file (KEY=value lines, docs/CLI.md). Values must be non-empty UTF-8 text.

output (standard output or -o), two YAML documents:
  1. a ConfigMap <name>-encrypted holding one ciphertext per key (safe to commit);
  2. a strategic-merge patch of the workload: the kamus-init init container, a memory
     emptyDir for the plaintexts, a projected token with audience kamus (600 s, mounted at
     /var/run/secrets/kamus), automountServiceAccountToken: false, and the app container's
     read-only mount of the plaintexts at --mount-path.

examples:
  kamus-cli seal secret.yaml -a api -u https://kamus-encryptor > sealed.yaml
  kamus-cli seal app.env -n team-a -a api --workload api --container server -o sealed.yaml
  yq 'select(.kind == "ConfigMap")' sealed.yaml | kubectl apply -f -
  yq 'select(.kind == "Deployment")' sealed.yaml > patch.yaml
  kubectl patch deployment api -n team-a --patch-file patch.yaml
"""


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add the ``seal`` command to ``commands``."""
    parser = commands.add_parser(
        "seal",
        help="turn a Secret manifest or .env file into a ConfigMap of ciphertexts and a patch",
        description=paragraph(
            "Encrypt every value of a Kubernetes Secret manifest or a .env file for one"
            " namespace and service account, and print a ConfigMap of the ciphertexts plus a"
            " ready strategic-merge patch that wires kamus-init into the workload. No plaintext"
            " is printed."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", type=Path, help="Secret manifest (YAML/JSON) or .env file")
    parser.add_argument(
        "--input-format",
        choices=("auto", "secret", "env"),
        default="auto",
        help="what SOURCE is (default: a Secret manifest if it parses as one, else .env)",
    )
    parser.add_argument(
        "-n", "--namespace", help="target namespace (default: the Secret's metadata.namespace)"
    )
    parser.add_argument("-a", "--service-account", required=True, help="target service account")
    parser.add_argument(
        "--name",
        help="base name: the ConfigMap is <name>-encrypted (default: the Secret's name, or the"
        " .env file's name without its extension)",
    )
    add_connection_arguments(parser, environ, url_env=URL_ENV, service="encryptor")
    wiring = parser.add_argument_group("patch")
    wiring.add_argument(
        "--kind", choices=tuple(WORKLOADS), default="Deployment", help="workload kind to patch"
    )
    wiring.add_argument("--workload", help="workload name (default: the service account's name)")
    wiring.add_argument(
        "--container", help="the app container to mount the plaintexts into (default: workload)"
    )
    wiring.add_argument(
        "--image",
        default=f"kamus-init:{VERSION}",
        help="kamus-init image (default: %(default)s)",
    )
    wiring.add_argument(
        "--decryptor-url",
        default=DEFAULT_DECRYPTOR_URL,
        help="KAMUS_URL of the init container (default: %(default)s)",
    )
    wiring.add_argument(
        "--mount-path",
        default=DEFAULT_MOUNT_PATH,
        help="where the app container sees the plaintexts (default: %(default)s)",
    )
    wiring.add_argument(
        "--init-format",
        default="files",
        help="kamus-init -f output format (default: files)",
    )
    wiring.add_argument("--init-file-name", help="kamus-init -n for single-file formats")
    add_output_arguments(parser, "the ConfigMap and the patch")
    add_sealing_key_argument(parser)
    parser.set_defaults(run=run, parser=parser)


def read_source(path: Path, input_format: str) -> tuple[dict[str, str], str | None, str | None]:
    """``(values, name, namespace)`` of a Secret manifest or a .env file; never prints values."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path} (a UTF-8 text file)") from exc
    secret = None if input_format == "env" else _secret_document(text, path, input_format)
    if secret is None:
        values = parse_env(text, str(path))
        stem = path.name.split(".")[0] if not path.name.startswith(".") else ""
        return _checked(values, path), stem or None, None
    metadata = secret.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InputError(f"{path}: the Secret's metadata is not a map")
    return (
        _checked(secret_values(secret, path), path),
        _text_or_none(metadata.get("name")),
        _text_or_none(metadata.get("namespace")),
    )


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _secret_document(text: str, path: Path, input_format: str) -> dict[str, Any] | None:
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        if input_format == "secret":
            raise InputError(f"{path} is not YAML or JSON") from exc
        return None
    secrets = [doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == "Secret"]
    if len(secrets) > 1:
        raise InputError(f"{path} holds {len(secrets)} Secrets; seal one at a time")
    if secrets:
        return secrets[0]
    if input_format == "secret":
        raise InputError(f"{path} holds no Secret manifest (kind: Secret)")
    return None


def secret_values(secret: Mapping[str, Any], path: Path) -> dict[str, str]:
    """The Secret's values: ``data`` base64-decoded, then ``stringData`` over it."""
    values: dict[str, str] = {}
    data = secret.get("data") or {}
    string_data = secret.get("stringData") or {}
    if not isinstance(data, dict) or not isinstance(string_data, dict):
        raise InputError(f"{path}: data and stringData must be maps")
    for key, encoded in data.items():
        if not isinstance(encoded, str):
            raise InputError(f"{path}: data.{key} must be a base64 string")
        try:
            raw = base64.b64decode("".join(encoded.split()), validate=True)
        except binascii.Error as exc:
            raise InputError(f"{path}: data.{key} is not valid base64") from exc
        try:
            values[str(key)] = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{path}: data.{key} is binary; Kamus encrypts UTF-8 text only"
                " (base64-encode the value yourself and decode it in the app)"
            ) from exc
    for key, value in string_data.items():
        if not isinstance(value, str):
            raise InputError(f"{path}: stringData.{key} must be a string")
        values[str(key)] = value
    return values


def _checked(values: Mapping[str, str], path: Path) -> dict[str, str]:
    if not values:
        raise InputError(f"{path} holds no value to seal")
    bad = [key for key in values if not _CONFIGMAP_KEY.fullmatch(key)]
    if bad:
        raise InputError(
            f"{path}: {', '.join(map(repr, bad))} cannot be ConfigMap keys"
            " (letters, digits, '-', '_' and '.')"
        )
    empty = [key for key, value in values.items() if not value]
    if empty:
        raise InputError(f"{path}: the value of {', '.join(empty)} is empty")
    return dict(values)


def configmap(name: str, namespace: str, ciphertexts: Mapping[str, str]) -> dict[str, Any]:
    """The ConfigMap holding one ciphertext per key."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(ciphertexts),
    }


def pod_spec_patch(
    *,
    configmap_name: str,
    service_account: str,
    container: str,
    image: str,
    decryptor_url: str,
    mount_path: str,
    init_format: str,
    init_file_name: str | None,
) -> dict[str, Any]:
    """The pod-spec part of the patch: init container, volumes, token and app mount."""
    args = ["-e", ENCRYPTED_MOUNT, "-d", DECRYPTED_MOUNT, "-f", init_format]
    if init_file_name:
        args += ["-n", init_file_name]
    return {
        "serviceAccountName": service_account,
        # The app needs no Kubernetes API token; the init container uses the kamus one.
        "automountServiceAccountToken": False,
        "initContainers": [
            {
                "name": "kamus-init",
                "image": image,
                "args": args,
                "env": [
                    {"name": environment.URL, "value": decryptor_url},
                    {"name": environment.TOKEN_FILE, "value": f"{PROJECTED_DIR}/token"},
                ],
                "volumeMounts": [
                    {"name": "kamus-encrypted", "mountPath": ENCRYPTED_MOUNT, "readOnly": True},
                    {"name": "kamus-decrypted", "mountPath": DECRYPTED_MOUNT},
                    {"name": "kamus-token", "mountPath": PROJECTED_DIR, "readOnly": True},
                ],
                "securityContext": {
                    "runAsNonRoot": True,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
        "containers": [
            {
                "name": container,
                "volumeMounts": [
                    {"name": "kamus-decrypted", "mountPath": mount_path, "readOnly": True}
                ],
            }
        ],
        "volumes": [
            {"name": "kamus-encrypted", "configMap": {"name": configmap_name}},
            {"name": "kamus-decrypted", "emptyDir": {"medium": "Memory"}},
            {
                "name": "kamus-token",
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": "kamus",
                                "expirationSeconds": 600,
                                "path": "token",
                            }
                        }
                    ]
                },
            },
        ],
    }


def workload_patch(
    kind: str, name: str, namespace: str, pod_spec: Mapping[str, Any]
) -> dict[str, Any]:
    """A strategic-merge patch of ``kind``/``name`` carrying ``pod_spec``."""
    spec: dict[str, Any] = (
        dict(pod_spec) if kind == "Pod" else {"template": {"spec": dict(pod_spec)}}
    )
    return {
        "apiVersion": WORKLOADS[kind],
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def run(args: argparse.Namespace) -> None:
    """Encrypt every value and print the ConfigMap and the patch."""
    check_output(args)
    values, source_name, source_namespace = read_source(args.source, args.input_format)
    namespace = args.namespace or source_namespace
    if not namespace:
        raise InputError("no namespace: pass -n/--namespace (the source names none)")
    if args.namespace and source_namespace and args.namespace != source_namespace:
        raise InputError(
            f"the Secret is in namespace {source_namespace!r} but -n says {args.namespace!r}"
        )
    name = args.name or source_name
    if not name:
        raise InputError("no name for the ConfigMap: pass --name")
    workload = args.workload or args.service_account
    with encrypter(args, sends="secrets", url_env=URL_ENV) as encrypt:
        ciphertexts = {
            key: encrypt(value, namespace, args.service_account) for key, value in values.items()
        }
    configmap_name = f"{name}-encrypted"
    pod_spec = pod_spec_patch(
        configmap_name=configmap_name,
        service_account=args.service_account,
        container=args.container or workload,
        image=args.image,
        decryptor_url=args.decryptor_url,
        mount_path=args.mount_path,
        init_format=args.init_format,
        init_file_name=args.init_file_name,
    )
    documents = [
        configmap(configmap_name, namespace, ciphertexts),
        workload_patch(args.kind, workload, namespace, pod_spec),
    ]
    text = yaml.safe_dump_all(documents, default_flow_style=False, sort_keys=False)
    emit(args, text.rstrip("\n") if args.output is None else text)
    print(
        f"kamus-cli: sealed {len(ciphertexts)} value(s) for {namespace}/{args.service_account}"
        f" into ConfigMap {configmap_name} and a {args.kind} patch of {workload}. The app reads"
        f" the plaintexts under {args.mount_path}, files of mode 0400 owned by uid 10001 (run"
        " the app as that uid, or use fsGroup and kamus-init --file-mode 0440).",
        file=sys.stderr,
    )
