"""kamus-init --watch: a native sidecar republishing when the ConfigMap changes, atomically.

The volumes are laid out and updated as the kubelet does (tests/support/configmap_mounts.py): a
ConfigMap of ciphertexts and a projected service-account token, both swapped through ``..data``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from canned_server import CannedServer, error_reply
from configmap_mounts import PREFIX, configmap_folder, echo, kubelet_update

from kamus_client.errors import OutputError
from kamus_client.exitcodes import ExitCode
from kamus_init.main import decrypt_and_render, main
from kamus_init.settings import load_settings
from kamus_init.snapshots import PREVIOUS_KEPT_SECONDS, prune, publish
from kamus_init.watch import watch

KEYS = ("db-password", "api-key", "tls.key")


def generation(number: int, keys: tuple[str, ...] = KEYS) -> dict[str, str]:
    return {key: f"{PREFIX}gen{number}-{key}" for key in keys}


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def mounts(tmp_path: Path) -> tuple[Path, Path, Path]:
    encrypted = configmap_folder(tmp_path / "encrypted", generation(1))
    token = configmap_folder(tmp_path / "token-volume", {"token": "eyJ-token-one"})
    return encrypted, token, tmp_path / "decrypted"


@pytest.fixture
def sidecar(
    mounts: tuple[Path, Path, Path], decryptor: CannedServer
) -> Iterator[tuple[threading.Event, list[str]]]:
    encrypted, token, decrypted = mounts
    environ = {"KAMUS_URL": decryptor.url, "TOKEN_FILE_PATH": str(token / "token")}
    argv = ["-e", str(encrypted), "-d", str(decrypted), "-f", "files", "--watch",
            "--watch-interval", "0.05", "--timeout", "1"]  # fmt: skip
    settings = load_settings(argv, environ)
    stop = threading.Event()
    published: list[str] = []

    def publish_files(ciphertexts: dict[str, str]) -> int:
        files = decrypt_and_render(settings, ciphertexts)
        publish(settings.decrypted_path, files, mode=settings.file_mode)
        published.append(files["db-password"].decode())
        return len(files)

    thread = threading.Thread(target=watch, args=(settings, publish_files), kwargs={"stop": stop})
    thread.start()
    try:
        wait_for(lambda: len(published) >= 1)
        yield stop, published
    finally:
        stop.set()
        thread.join(10)


def snapshot(decrypted: Path) -> dict[str, str]:
    """What a reader sees through ..data resolved once."""
    current = decrypted / os.readlink(decrypted / "..data")
    return {path.name: path.read_text() for path in current.iterdir()}


def test_readers_never_see_a_mixed_or_partial_set_while_the_configmap_changes(
    mounts: tuple[Path, Path, Path], sidecar: tuple[threading.Event, list[str]]
) -> None:
    encrypted, _, decrypted = mounts
    _, published = sidecar
    seen: set[int] = set()
    problems: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                values = snapshot(decrypted)
            except FileNotFoundError:
                continue  # an old snapshot removed between readlink and open: read again
            generations = {value.split("-", 1)[0] for value in values.values()}
            if len(generations) != 1 or set(values) != set(KEYS):
                problems.append(repr(values))
            seen.update(int(g.removeprefix("gen")) for g in generations)

    thread = threading.Thread(target=reader)
    thread.start()
    for number in range(2, 7):
        kubelet_update(encrypted, generation(number))
        wait_for(lambda number=number: published[-1] == f"gen{number}-db-password")  # type: ignore[misc]
    done.set()
    thread.join(10)

    assert problems == []
    assert len(seen) >= 3
    # The visible names follow ..data: the app reads plain paths.
    assert (decrypted / "api-key").read_text() == "gen6-api-key"
    assert oct((decrypted / "..data").lstat().st_mode)[-3:] == "777"  # a symlink
    # The current snapshot and those replaced less than a few seconds ago (for readers that
    # resolved ..data before), here all of them.
    assert len([p for p in decrypted.iterdir() if p.name.startswith("..2")]) == 6


def test_a_failure_keeps_the_last_files_and_a_later_change_recovers(
    mounts: tuple[Path, Path, Path],
    sidecar: tuple[threading.Event, list[str]],
    decryptor: CannedServer,
    capfd: pytest.CaptureFixture[str],
) -> None:
    encrypted, _, decrypted = mounts
    _, published = sidecar
    decryptor.otherwise = error_reply(403, "scope_mismatch", "not yours")
    kubelet_update(encrypted, generation(2))
    wait_for(lambda: "the last published files are kept" in capfd.readouterr().err)
    assert snapshot(decrypted)["db-password"] == "gen1-db-password"

    decryptor.otherwise = echo
    kubelet_update(encrypted, generation(3))
    wait_for(lambda: published[-1] == "gen3-db-password")
    assert snapshot(decrypted)["tls.key"] == "gen3-tls.key"


def test_the_refreshed_token_is_sent_and_removed_keys_disappear(
    mounts: tuple[Path, Path, Path],
    sidecar: tuple[threading.Event, list[str]],
    decryptor: CannedServer,
) -> None:
    encrypted, token, decrypted = mounts
    _, published = sidecar
    kubelet_update(token, {"token": "eyJ-token-two"})
    kubelet_update(encrypted, generation(2, ("db-password", "api-key")))
    wait_for(lambda: published[-1] == "gen2-db-password")

    assert decryptor.requests[-1].headers["Authorization"] == "Bearer eyJ-token-two"
    assert sorted(p.name for p in decrypted.iterdir() if not p.name.startswith("..")) == [
        "api-key",
        "db-password",
    ]


def test_sigterm_stops_the_sidecar_cleanly(
    mounts: tuple[Path, Path, Path], decryptor: CannedServer
) -> None:
    encrypted, token, decrypted = mounts
    env = {**os.environ, "KAMUS_URL": decryptor.url, "TOKEN_FILE_PATH": str(token / "token"),
           "NO_PROXY": "127.0.0.1"}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "kamus_init.main", "-e", str(encrypted), "-d", str(decrypted),
         "-f", "json", "--watch", "--watch-interval", "0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for((decrypted / "config.json").exists)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "published 3 decrypted item(s)" in out
    assert out.rstrip().endswith("kamus-init: stopping")


def test_a_replaced_snapshot_is_removed_a_few_seconds_after_the_switch(tmp_path: Path) -> None:
    target = tmp_path / "decrypted"
    publish(target, {"password": b"old"}, mode=0o400)
    publish(target, {"password": b"new"}, mode=0o400)
    switched = (target / "..data").lstat().st_mtime

    def snapshots() -> list[str]:
        return sorted(p.name for p in target.iterdir() if p.name.startswith("..2"))

    assert len(snapshots()) == 2
    prune(target, now=lambda: switched + PREVIOUS_KEPT_SECONDS - 1)  # a reader may still be on it
    assert len(snapshots()) == 2
    prune(target, now=lambda: switched + PREVIOUS_KEPT_SECONDS + 1)
    assert snapshots() == [os.readlink(target / "..data")]
    assert (target / "password").read_text() == "new"
    prune(tmp_path / "never-published")  # nothing to do, no error


def read_errors_until(capfd: pytest.CaptureFixture[str], condition: Callable[[str], bool]) -> str:
    """Standard error gathered until ``condition`` holds for it (or 10 s)."""
    err = ""
    deadline = time.monotonic() + 10
    while not condition(err):
        assert time.monotonic() < deadline, f"timed out: {err!r}"
        err += capfd.readouterr().err
        time.sleep(0.01)
    return err


def entries(decrypted: Path) -> dict[str, str]:
    """Everything in the output folder: a link's target, else ``dir`` or ``file``."""
    return {
        path.name: os.readlink(path) if path.is_symlink() else "dir" if path.is_dir() else "file"
        for path in decrypted.iterdir()
    }


def test_a_failed_update_leaves_exactly_the_previous_snapshot_and_nothing_else(
    mounts: tuple[Path, Path, Path],
    sidecar: tuple[threading.Event, list[str]],
    capfd: pytest.CaptureFixture[str],
) -> None:
    encrypted, _, decrypted = mounts
    before = entries(decrypted)
    (decrypted / "blocker").mkdir()  # a folder where the new key's link must go
    kubelet_update(encrypted, generation(2, (*KEYS, "blocker")))
    err = read_errors_until(capfd, lambda err: err.count("the last published files are kept") >= 3)

    assert entries(decrypted) == {**before, "blocker": "dir"}
    assert snapshot(decrypted)["db-password"] == "gen1-db-password"
    assert "gen2" not in err


def test_a_switch_that_fails_halfway_is_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "decrypted"
    publish(target, {"a": b"old"}, mode=0o400)
    before = entries(target)
    replace = os.replace

    def failing(source: str | Path, destination: str | Path) -> None:
        if Path(destination).name == "b":
            raise OSError(28, "No space left on device")
        replace(source, destination)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OutputError):
        publish(target, {"a": b"new", "b": b"new"}, mode=0o400)

    assert entries(target) == before
    assert (target / "a").read_text() == "old"


def test_a_failed_first_publication_leaves_nothing(
    mounts: tuple[Path, Path, Path],
    decryptor: CannedServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    encrypted, token, decrypted = mounts
    (decrypted / "api-key").mkdir(parents=True)
    environ = {"KAMUS_URL": decryptor.url, "TOKEN_FILE_PATH": str(token / "token")}
    argv = ["-e", str(encrypted), "-d", str(decrypted), "-f", "files", "--watch"]

    assert main(argv, environ) == ExitCode.OUTPUT

    assert entries(decrypted) == {"api-key": "dir"}
    assert "gen1" not in capsys.readouterr().err


@pytest.mark.parametrize("length", [243, 255])
def test_a_key_of_up_to_255_bytes_is_published(tmp_path: Path, length: int) -> None:
    target = tmp_path / "decrypted"
    name = "k" * length

    publish(target, {name: b"secret"}, mode=0o400)

    assert (target / name).read_text() == "secret"
    assert sorted(entries(target)) == sorted([name, "..data", os.readlink(target / "..data")])


def test_every_snapshot_replaced_within_the_grace_period_stays(tmp_path: Path) -> None:
    target = tmp_path / "decrypted"
    for number in range(4):  # faster than the grace period: a --watch-interval under 5 s
        publish(target, {"password": f"v{number}".encode()}, mode=0o400)

    def snapshots_of() -> list[str]:
        return [p.name for p in target.iterdir() if p.name.startswith("..2")]

    assert len(snapshots_of()) == 4
    prune(target)
    assert len(snapshots_of()) == 4
    prune(target, now=lambda: time.time() + PREVIOUS_KEPT_SECONDS + 1)
    assert snapshots_of() == [os.readlink(target / "..data")]


def test_the_output_folder_is_created_with_mode_0700(tmp_path: Path) -> None:
    target = tmp_path / "decrypted"

    publish(target, {"password": b"x"}, mode=0o400)

    assert target.stat().st_mode & 0o777 == 0o700


def test_a_refused_ciphertext_is_retried_with_exponential_backoff(
    mounts: tuple[Path, Path, Path],
    sidecar: tuple[threading.Event, list[str]],
    decryptor: CannedServer,
    capfd: pytest.CaptureFixture[str],
) -> None:
    encrypted, _, _ = mounts
    _, published = sidecar
    decryptor.otherwise = error_reply(403, "scope_mismatch", "not yours")
    kubelet_update(encrypted, generation(2))
    wait_for(lambda: len(decryptor.requests) >= 2)
    first = len(decryptor.requests)
    time.sleep(1.5)  # 30 intervals of 0.05 s

    # 0.05, 0.1, 0.2, 0.4, 0.8 s apart: about 4 more, not 30.
    assert len(decryptor.requests) - first <= 6
    assert "next try in" in capfd.readouterr().err
    # A change is tried at once.
    decryptor.otherwise = echo
    kubelet_update(encrypted, generation(3))
    wait_for(lambda: published[-1] == "gen3-db-password", seconds=2)


def test_a_deeply_nested_json_plaintext_keeps_the_sidecar_and_its_files(
    mounts: tuple[Path, Path, Path],
    sidecar: tuple[threading.Event, list[str]],
    capfd: pytest.CaptureFixture[str],
) -> None:
    encrypted, _, decrypted = mounts
    _, published = sidecar
    kubelet_update(encrypted, {**generation(2), "deep": PREFIX + "[" * 3000 + "]" * 3000})
    err = read_errors_until(capfd, lambda err: "the last published files are kept" in err)

    assert "nested too deeply" in err
    assert "bug" not in err
    assert snapshot(decrypted)["db-password"] == "gen1-db-password"
    kubelet_update(encrypted, generation(3))
    wait_for(lambda: published[-1] == "gen3-db-password")
