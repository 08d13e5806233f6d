"""Credentials at rest: Fernet-encrypted JSON under the current key, with older keys still readable.

The key is WATCHER_SECRET_KEY (a passphrase of at least 16 characters), or else the data dir's
`secret.key`, generated once: one Fernet key a line, the first encrypting, every line decrypting, so a
rotation can list "new, then old" while it re-encrypts. WATCHER_SECRET_KEY_FALLBACKS adds keys that only
decrypt (the old passphrase during a rotation). The key file is read on every use, so a worker running
through a rotation follows it without a restart. A key that is empty or too weak is refused, never used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from watcher.errors import StateError
from watcher.runtime.private_files import create_private, private_dir
from watcher.settings import Settings, get_settings

KEY_FILE = "secret.key"
MIN_PASSPHRASE = 16
MAKE_PASSPHRASE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class KeyRefused(StateError):
    """The configured key is missing, empty or too weak: nothing can be encrypted or decrypted."""


class Undecryptable(StateError):
    """None of the keys opens these credentials."""


@dataclass(frozen=True, repr=False)
class Keyring:
    """The keys in use: the first encrypts, every one decrypts. Never printed (no repr)."""

    materials: tuple[str, ...]

    def encrypt(self, plaintext: bytes) -> str:
        return _stretch(self.materials[0]).encrypt(plaintext).decode()

    def decrypt(self, token: str) -> bytes:
        try:
            return MultiFernet([_stretch(m) for m in self.materials]).decrypt(token.encode())
        except InvalidToken:
            raise Undecryptable(
                "cannot be decrypted: none of the keys (WATCHER_SECRET_KEY and its fallbacks, or the data dir's "
                "secret.key) is the one they were saved with; restore that key, or re-enter the credentials "
                "with `watcher registry apply`"
            ) from None

    def is_current(self, token: str) -> bool:
        """Whether `token` is encrypted under the first key already."""
        try:
            _stretch(self.materials[0]).decrypt(token.encode())
        except InvalidToken:
            return False
        return True


def _stretch(material: str) -> Fernet:
    # Any passphrase works: it is stretched to a Fernet key, so operators need not know Fernet's format.
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(material.encode()).digest()))


def keyring(settings: Settings | None = None) -> Keyring:
    """The current keys, read now (the key file may have been rotated since the last call)."""
    settings = settings or get_settings()
    primary = [_checked_passphrase(settings.secret_key)] if settings.secret_key else read_key_file(settings)
    return Keyring((*primary, *fallbacks(settings)))


def fallbacks(settings: Settings) -> list[str]:
    """WATCHER_SECRET_KEY_FALLBACKS: decrypt-only keys, comma- or newline-separated.

    They are not held to the passphrase length: they are the old keys a rotation moves away from.
    """
    return [part.strip() for part in re.split(r"[,\n]", settings.secret_key_fallbacks) if part.strip()]


def _checked_passphrase(passphrase: str) -> str:
    if len(passphrase.strip()) < MIN_PASSPHRASE:
        raise KeyRefused(
            f"WATCHER_SECRET_KEY is too short ({len(passphrase.strip())} characters): use a passphrase of at least "
            f"{MIN_PASSPHRASE}, e.g. the output of `{MAKE_PASSPHRASE}`"
        )
    return passphrase


def key_file(settings: Settings) -> Path:
    return Path(settings.data_dir) / KEY_FILE


def read_key_file(settings: Settings) -> list[str]:
    """The key file's keys, newest first; generated (whole, 0600) when there is none yet."""
    path = key_file(settings)
    if not path.exists():
        private_dir(path.parent)
        create_private(path, Fernet.generate_key().decode() + "\n")  # a racing process may win: read its key
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyRefused(f"cannot read the key file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    keys = [line.strip() for line in text.splitlines() if line.strip()]
    if not keys:
        raise _bad_key_file(path, "empty")
    if not all(_is_fernet_key(key) for key in keys):
        raise _bad_key_file(path, "truncated or damaged (each line must be a 32-byte Fernet key)")
    return keys


def _is_fernet_key(text: str) -> bool:
    try:
        return len(base64.b64decode(text, altchars=b"-_", validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def _bad_key_file(path: Path, problem: str) -> KeyRefused:
    return KeyRefused(
        f"the key file {path} is {problem}: restore it from a backup, or move it away to have a new key "
        "generated (credentials saved under the old one must then be entered again)"
    )


def derive_key(purpose: str, settings: Settings | None = None) -> str:
    """A key for `purpose` (e.g. signing the console's session cookie), derived from the current secret key
    material but never equal to the credentials' key, so one cannot be turned into the other. A rotation
    changes it too (console sessions then sign in again)."""
    material = keyring(settings).materials[0].encode()
    return hmac.new(material, f"watcher:{purpose}".encode(), hashlib.sha256).hexdigest()


def encrypt(credentials: dict[str, str], keys: Keyring | None = None) -> str:
    if not credentials:
        return ""
    return (keys or keyring()).encrypt(json.dumps(credentials, sort_keys=True).encode())


def decrypt(token: str, keys: Keyring | None = None) -> dict[str, str]:
    """The credentials in `token`; raises Undecryptable (one line, naming no key) when no key opens it."""
    if not token:
        return {}
    data: dict[str, str] = json.loads((keys or keyring()).decrypt(token))
    return data
