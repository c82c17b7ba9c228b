"""The local C2PA signing key is made once, even when threads or processes sign their first output together:
everyone gets the same matching key and certificate, and no half-made or temporary key folder is left.
(Apart from test_provenance.py: no av needed, and spawned workers import this light module.)"""
from __future__ import annotations

import multiprocessing
import os
import stat
import sys
import threading

import pytest

pytest.importorskip("cryptography", reason="C2PA keys need cryptography (pip install 'reenact[provenance]')")
pytest.importorskip("c2pa", reason="C2PA needs c2pa-python (pip install 'reenact[provenance]')")

from reenact.provenance import c2pa  # noqa: E402


def _all_at_once(barrier) -> tuple[bytes, bytes]:
    barrier.wait(timeout=60)
    return c2pa._credentials()


def _worker(barrier, queue) -> None:  # a spawned process: REENACT_C2PA_DIR comes from the parent's environment
    try:
        queue.put(_all_at_once(barrier))
    except BaseException as e:  # noqa: BLE001  (reported to the parent as a failure)
        queue.put(repr(e))


def _check(results, tmp_path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    assert all(isinstance(r, tuple) for r in results), results
    assert len(set(results)) == 1, "callers got different keys"
    chain, key = results[0]
    cert = x509.load_pem_x509_certificates(chain)[0]
    assert cert.public_key() == load_pem_private_key(key, None).public_key(), "certificate does not match key"
    folder = tmp_path / "keys"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys"], "a temporary key folder was left behind"
    assert sorted(p.name for p in folder.iterdir()) == ["signer.key", "signer.pem"]
    assert ((folder / "signer.pem").read_bytes(), (folder / "signer.key").read_bytes()) == results[0]
    if os.name == "posix":
        assert stat.S_IMODE((folder / "signer.key").stat().st_mode) == 0o600


@pytest.fixture
def key_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("REENACT_C2PA_DIR", str(tmp_path / "keys"))
    return tmp_path


def test_threads_make_one_key(key_folder):
    n = 8
    barrier, results, errors = threading.Barrier(n), [None] * n, []

    def run(i):
        try:
            results[i] = _all_at_once(barrier)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    _check(results, key_folder)
    assert c2pa._credentials() == results[0]  # later calls reuse it


def test_processes_make_one_key(key_folder):
    if "test_provenance_keys" not in sys.modules:
        pytest.skip("spawned workers need this module importable as test_provenance_keys")
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(barrier, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=60) for _ in range(n)]
    finally:
        for p in procs:
            p.join(timeout=30)
    _check(results, key_folder)


def test_empty_key_dir_is_filled(key_folder):
    (key_folder / "keys").mkdir()  # e.g. $REENACT_C2PA_DIR made by hand beforehand
    _check([c2pa._credentials()], key_folder)


def test_incomplete_key_dir_is_an_error_not_overwritten(key_folder):
    folder = key_folder / "keys"
    folder.mkdir()
    (folder / "signer.key").write_bytes(b"left by someone else")
    with pytest.raises(RuntimeError, match="no complete C2PA key pair"):
        c2pa._credentials()
    assert sorted(p.name for p in key_folder.iterdir()) == ["keys"]
    assert (folder / "signer.key").read_bytes() == b"left by someone else"
