"""The cluster witness: each chain's latest signed checkpoint, kept in the Kubernetes API.

Whoever can rewrite the audit files (the volume's owner, a node's root) cannot rewrite the API
server's objects without credentials the decryptor's pods do not give them. Each worker process
publishes the latest checkpoint of its chain into one ConfigMap per decryptor Deployment (the
chart creates it, and a Role lets the decryptor ``get`` and ``patch`` that ConfigMap alone), under
the chain's file name, as the same JSON line it prints on stdout. Entries of chains that ended
stay: ``kamus-audit verify --witness-from-cluster`` then finds a chain missing, shorter than its
witnessed size, or different at a witnessed size.

Publishing never delays a decrypt: a thread per process sends the latest checkpoint of each chain
(a patch of that one key, so processes never overwrite each other's entries, and a refused key
never holds up the others) and, when the API does not answer, logs it, counts it and tries again
with the next checkpoint or after :data:`RETRY_SECONDS`.

A chain started because the one before it could not be continued names it, and its head, in its
first record, which its first checkpoint signs: publishing that checkpoint removes the entry of
the chain it replaces, so chains broken on purpose (a byte appended by whoever can write the
volume breaks one per request) do not fill the ConfigMap, and the old chain stays checked through
the link.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
from typing import Any

from kubernetes import client
from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("kamus.audit")

RETRY_SECONDS = 5.0
_TIMEOUT_SECONDS = 10.0
_EXIT_FLUSH_SECONDS = 3.0  # within gunicorn's graceful timeout


class ClusterWitness:
    """Publishes checkpoint lines into the ConfigMap ``namespace/name`` from a thread."""

    def __init__(
        self, api: client.ApiClient, reference: str, registry: CollectorRegistry | None = None
    ) -> None:
        self.namespace, _, self.name = reference.partition("/")
        self._api = api
        self._pending: dict[str, tuple[str, str | None]] = {}  # chain -> (line, replaced chain)
        self._wake = threading.Condition()
        self._pid = -1
        self.failures = Counter(
            "kamus_audit_witness_failures",
            "Checkpoints the cluster witness (a ConfigMap) could not take yet",
            registry=registry if registry is not None else CollectorRegistry(),
        )
        self.published = 0  # checkpoints the API server took, in this process

    def offer(self, chain: str, line: dict[str, Any], *, replaces: str | None = None) -> None:
        """Publish ``line`` (a checkpoint's stdout event) as the head of ``chain``, soon, and
        remove the entry of the chain it ``replaces`` (named by its chain start)."""
        with self._wake:
            text = json.dumps(line, sort_keys=True, separators=(",", ":"))
            earlier = self._pending.get(chain)
            self._pending[chain] = (text, replaces or (earlier[1] if earlier else None))
            if self._pid != os.getpid():  # a thread does not survive gunicorn's fork
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="audit-witness", daemon=True).start()
                # After the writer's own exit hook (hooks run last first): the checkpoint a
                # stopping worker signs reaches the cluster too, unless the API is down.
                atexit.register(self.flush, _EXIT_FLUSH_SECONDS)
            self._wake.notify()

    def flush(self, timeout: float) -> bool:
        """Wait until everything offered was published (for tests and shutdown)."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._pending, timeout)

    def _run(self) -> None:
        api = client.CoreV1Api(self._api)
        while True:
            with self._wake:
                self._wake.wait_for(lambda: bool(self._pending))
                batch = dict(self._pending)
            # Each key on its own: a refused one (a full ConfigMap) holds up none of the others.
            published = [self._publish(api, chain, *entry) for chain, entry in batch.items()]
            if not all(published):
                with self._wake:
                    self._wake.wait(RETRY_SECONDS)

    def _publish(self, api: client.CoreV1Api, chain: str, line: str, replaces: str | None) -> bool:
        data: dict[str, str | None] = {chain: line}
        if replaces is not None and replaces != chain:
            data[replaces] = None  # removes that key
        try:
            api.patch_namespaced_config_map(
                self.name, self.namespace, {"data": data}, _request_timeout=_TIMEOUT_SECONDS
            )
        except Exception as exc:  # any failure of the API: try again later
            self.failures.inc()
            log.warning(
                "cannot publish the head of audit chain %s to the ConfigMap %s/%s (%s); trying "
                "again", chain, self.namespace, self.name, _reason(exc),
            )  # fmt: skip
            return False
        with self._wake:
            if self._pending.get(chain) == (line, replaces):
                del self._pending[chain]
            self.published += 1
            self._wake.notify_all()
        return True


def _reason(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    return f"HTTP {status}" if status else type(exc).__name__
