"""Credentials at rest: Fernet-encrypted JSON, keyed by WATCHER_SECRET_KEY or a key generated once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from watcher.errors import StateError
from watcher.settings import Settings, get_settings


def _key_material(settings: Settings) -> str:
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.data_dir) / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(Fernet.generate_key().decode())
    return path.read_text().strip()


def _fernet(settings: Settings | None = None) -> Fernet:
    # Any passphrase works: it is stretched to a Fernet key, so operators need not know Fernet's format.
    material = _key_material(settings or get_settings()).encode()
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(material).digest()))


def derive_key(purpose: str, settings: Settings | None = None) -> str:
    """A key for `purpose` (e.g. signing the console's session cookie), derived from the same secret key
    material as the credentials' key but never equal to it, so one cannot be turned into the other."""
    material = _key_material(settings or get_settings()).encode()
    return hmac.new(material, f"watcher:{purpose}".encode(), hashlib.sha256).hexdigest()


def encrypt(credentials: dict[str, str]) -> str:
    if not credentials:
        return ""
    return _fernet().encrypt(json.dumps(credentials, sort_keys=True).encode()).decode()


def decrypt(token: str) -> dict[str, str]:
    if not token:
        return {}
    try:
        data: dict[str, str] = json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken:
        raise StateError(
            "stored credentials cannot be decrypted: WATCHER_SECRET_KEY (or the data dir's secret.key) "
            "differs from the one they were saved with"
        ) from None
    return data
