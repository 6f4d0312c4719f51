"""Entry point of ``kamus-init``: read ciphertexts, decrypt them in one batch, write the outputs."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from kamus_client.api import KamusClient
from kamus_client.exitcodes import ExitCode
from kamus_client.program import run_program
from kamus_client.tokenfile import read_token_file
from kamus_client.version import user_agent
from kamus_init.backoff import Backoff, call_with_retries
from kamus_init.formats import FORMATS, OutputSpec
from kamus_init.outputs import write_atomically
from kamus_init.settings import Settings, load_settings
from kamus_init.sources import read_ciphertexts

PROGRAM = "kamus-init"


def run(
    settings: Settings,
    *,
    backoff: Backoff | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Decrypt and write everything, returning the number of items; raises a ClientError.

    ``clock`` and ``sleep`` time the retries (tests pass a fake clock instead of waiting).
    """
    ciphertexts = read_ciphertexts(
        settings.encrypted_folders,
        encrypted_files=settings.encrypted_files,
        skip=(settings.template.path,) if settings.template is not None else (),
    )
    files = decrypt_and_render(settings, ciphertexts, backoff=backoff, clock=clock, sleep=sleep)
    write_atomically(settings.decrypted_path, files, mode=settings.file_mode)
    return len(ciphertexts)


def decrypt_and_render(
    settings: Settings,
    ciphertexts: dict[str, str],
    *,
    backoff: Backoff | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, bytes]:
    """The output files of ``ciphertexts``, decrypted in one batch (with retries)."""
    with KamusClient(
        settings.kamus_url,
        user_agent=user_agent(PROGRAM),
        timeout=(backoff or Backoff()).attempt_timeout,
        ca_bundle=settings.ca_bundle,
    ) as client:

        def attempt(timeout: float) -> dict[str, str]:
            return client.decrypt_batch(
                ciphertexts, token=read_token_file(settings.token_path), timeout=timeout
            )

        plaintexts = call_with_retries(
            attempt, deadline=settings.deadline, backoff=backoff, clock=clock, sleep=sleep
        )
    render = FORMATS[settings.output_format]
    return render(
        plaintexts,
        OutputSpec(
            file_name=settings.decrypted_file_name,
            template=settings.template,
            raw_cfg_values=settings.raw_cfg_values,
        ),
    )


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run ``kamus-init`` and return its exit code (argparse exits 2 itself on usage errors)."""

    def call() -> int:
        settings = load_settings(argv, os.environ if environ is None else environ)
        if settings.watch:
            from kamus_init import snapshots, watch  # noqa: PLC0415 - the sidecar mode only

            def publish(ciphertexts: dict[str, str]) -> int:
                files = decrypt_and_render(settings, ciphertexts, clock=clock, sleep=sleep)
                snapshots.publish(settings.decrypted_path, files, mode=settings.file_mode)
                return len(ciphertexts)

            def prune() -> None:
                snapshots.prune(settings.decrypted_path)

            return watch.watch(settings, publish, program=PROGRAM, between=prune)
        count = run(settings, clock=clock, sleep=sleep)
        print(
            f"{PROGRAM}: wrote {count} decrypted item(s) to {settings.decrypted_path}"
            f" as {settings.output_format}"
        )
        return ExitCode.OK

    return run_program(PROGRAM, call)


if __name__ == "__main__":
    sys.exit(main())
