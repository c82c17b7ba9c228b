"""C2PA manifests, signed offline with a key made on this machine (optional: ``pip install 'reenact[provenance]'``).

The first signature creates, in :func:`key_dir` (``$REENACT_C2PA_DIR``, else ``~/.config/reenact/c2pa``):
a self-signed ECDSA P-256 certificate authority ("reenact local CA", its private key thrown away once it has
signed), a signing certificate it issued (``signer.pem``: the chain) and that certificate's private key
(``signer.key``, mode 0600). Every manifest reenact writes is signed with it and names the file as created by
``trainedAlgorithmicMedia`` (IPTC's term for synthetic media), with the provenance record as an
``org.reenact.provenance`` assertion.

What a verifier can trust then: the manifest's hash binding says whether the file's bytes changed since it was
signed (C2PA validation "Valid" vs "Invalid"), and that whoever signed held this machine's key. It cannot tell
*who* that was: the certificate chains to no trust list (validation reports ``signingCredential.untrusted``),
anyone can make such a key and sign any claim, and a re-encode or a metadata strip removes the manifest.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

__all__ = ["available", "why_unavailable", "can_carry", "cannot_carry", "key_dir", "sign_in_place", "read",
           "local_signer_serial"]

ACTION_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
ASSERTION = "org.reenact.provenance"
_MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".png": "image/png",
         ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".tif": "image/tiff",
         ".tiff": "image/tiff"}



def can_carry(name: str | os.PathLike) -> bool:
    """Whether a file of this name (by its extension) can hold a C2PA manifest as reenact signs them."""
    return Path(name).suffix.lower() in _MIME


def cannot_carry(name: str | os.PathLike) -> str:
    """Why a file of this name gets no manifest (for messages)."""
    what = Path(name).suffix or "a name without an extension"
    return f"C2PA is embedded in {', '.join(sorted(_MIME))} files only, not {what} (name a video .mp4)"


def _modules():
    import c2pa  # noqa: PLC0415  (optional)
    import cryptography  # noqa: F401,PLC0415

    return c2pa


def available() -> bool:
    """Whether ``c2pa-python`` (and ``cryptography``) are installed and ``$REENACT_C2PA`` is not ``0``."""
    if os.environ.get("REENACT_C2PA", "1") == "0":
        return False
    try:
        _modules()
    except ImportError:
        return False
    return True


def why_unavailable() -> str:
    if os.environ.get("REENACT_C2PA", "1") == "0":
        return "REENACT_C2PA=0 turns C2PA off"
    return "c2pa-python is not installed (pip install 'reenact[provenance]')"


def key_dir() -> Path:
    env = os.environ.get("REENACT_C2PA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or (Path.home() / ".config")
    return Path(base) / "reenact" / "c2pa"


def _new_keys() -> tuple[bytes, bytes]:
    """A local CA and a signing certificate it issued (10 years): (chain PEM, PKCS#8 key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _dt.datetime.now(_dt.timezone.utc)
    org = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "reenact (local key, not on any trust list)")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "reenact local CA"), org])
    ku = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
              encipher_only=False, decipher_only=False)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - _dt.timedelta(days=1)).not_valid_after(now + _dt.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **ku), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "reenact local signer"), org])
    leaf = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(days=1)).not_valid_after(now + _dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **ku),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (leaf.public_bytes(pem) + ca.public_bytes(pem),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _write_synced(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its renames are durable enough for a key we can remake
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _has_keys(folder: Path) -> bool:
    return (folder / "signer.pem").is_file() and (folder / "signer.key").is_file()


def _make_keys(folder: Path) -> None:
    """Create the key pair in ``folder`` unless another process has: both files are written and synced in a
    fresh folder beside it, then published by one rename, so a reader sees both files (a matching pair) or
    neither, and a crash leaves no half-made ``folder``."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    chain, key = _new_keys()
    # Hidden, beside the final folder: same file system, so the rename is atomic. mkdtemp makes it 0700.
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        _write_synced(tmp / "signer.key", key, 0o600)
        _write_synced(tmp / "signer.pem", chain, 0o644)
        _fsync_dir(tmp)
        for attempt in range(2):
            try:
                os.rename(tmp, folder)  # POSIX: also replaces an empty folder (e.g. a fresh $REENACT_C2PA_DIR)
                break
            except OSError:
                if _has_keys(folder):
                    return  # another process published first: use theirs (finally removes ours)
                if not folder.exists():
                    raise  # not a lost race: e.g. no permission in the parent folder
                if attempt == 0 and folder.is_dir() and not any(folder.iterdir()):
                    # Windows will not rename onto an existing folder, even an empty one
                    with contextlib.suppress(OSError):
                        folder.rmdir()
                    continue
                # Never fill a folder someone else started: we could not publish the pair atomically there.
                raise RuntimeError(f"{folder} exists but holds no complete C2PA key pair (signer.pem + signer.key);"
                                   " move it away or set $REENACT_C2PA_DIR to another folder") from None
        _fsync_dir(folder.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# The one piece of module state: threads of one process (the web app) take turns at check-and-create, so only
# one of them generates a key; other processes are handled by the atomic rename in _make_keys.
_KEYS_LOCK = threading.Lock()


def _credentials() -> tuple[bytes, bytes]:
    folder = key_dir()
    with _KEYS_LOCK:
        if not _has_keys(folder):
            _make_keys(folder)
    # Published once and never rewritten, so these two reads are a matching pair.
    return (folder / "signer.pem").read_bytes(), (folder / "signer.key").read_bytes()


def local_signer_serial() -> str | None:
    """Serial number (decimal) of this machine's signing certificate, None when none was made yet."""
    chain = key_dir() / "signer.pem"
    if not chain.is_file():
        return None
    from cryptography import x509

    return str(x509.load_pem_x509_certificates(chain.read_bytes())[0].serial_number)


def manifest(record: dict, title: str) -> dict[str, Any]:
    agent = {"name": record.get("tool", "reenact"), "version": str(record.get("version", ""))}
    return {
        "claim_generator_info": [agent],
        "title": title,
        "assertions": [
            {"label": "c2pa.actions.v2",
             "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": ACTION_SOURCE,
                                   "softwareAgent": agent}]}},
            {"label": ASSERTION, "data": record},
        ],
    }


def sign_in_place(path: str | os.PathLike, record: dict, title: str | None = None) -> bool:
    """Embed a signed manifest into the file at ``path`` (replaced atomically). Returns whether it was signed;
    a failure is a warning, not an error: the container record and the watermark are still there."""
    path = Path(path)
    if path.suffix.lower() not in _MIME:
        return False
    c2pa = _modules()
    signed = path.with_name(f".{path.stem}.c2pa{path.suffix}")
    try:
        chain, key = _credentials()
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, key, None))
        try:
            with c2pa.Builder(json.dumps(manifest(record, title or path.name))) as builder:
                builder.sign_file(str(path), str(signed), signer)
        finally:
            signer.close()
        os.replace(signed, path)
        return True
    except Exception as e:  # noqa: BLE001  (c2pa raises its own types; the write itself must not be lost)
        signed.unlink(missing_ok=True)
        warnings.warn(f"{title or path.name}: no C2PA manifest ({type(e).__name__}: {e}); the container "
                      "metadata and the watermark are still written", stacklevel=3)
        return False


def read(path: str | os.PathLike) -> dict[str, Any] | None:
    """The file's active C2PA manifest, summarised: ``state`` (Valid / Invalid / Trusted), ``signer``
    (issuer, common name, serial), ``local_key`` (signed with this machine's key), ``failures`` (codes),
    ``record`` (our assertion) and ``generator``. None when there is no manifest or c2pa is not installed."""
    if Path(path).suffix.lower() not in _MIME:
        return None  # a format C2PA cannot carry (BMP) or reenact does not write
    try:
        c2pa = _modules()
    except ImportError:
        return None
    try:
        reader = c2pa.Reader.try_create(str(path))
    except Exception as e:  # noqa: BLE001
        return {"state": "Unreadable", "error": str(e), "failures": [], "signer": {}, "record": None}
    if reader is None:
        return None
    with reader:
        store = json.loads(reader.json())
        state = reader.get_validation_state()
        results = reader.get_validation_results() or {}
    active = store.get("manifests", {}).get(store.get("active_manifest"), {})
    sig = active.get("signature_info", {})
    record = next((a.get("data") for a in active.get("assertions", []) if a.get("label") == ASSERTION), None)
    failures = [f.get("code") for f in (results.get("activeManifest", {}) or {}).get("failure", [])]
    gen = active.get("claim_generator_info") or [{}]
    return {"state": str(state), "failures": failures, "record": record,
            "signer": {"issuer": sig.get("issuer"), "common_name": sig.get("common_name"),
                       "serial": sig.get("cert_serial_number")},
            "local_key": sig.get("cert_serial_number") is not None
            and sig.get("cert_serial_number") == local_signer_serial(),
            "generator": f"{gen[0].get('name', '?')} {gen[0].get('version', '')}".strip()}
