"""Per-function invoke keys: how someone without a platform token calls a private function.

The API makes a key when a private function is created (or its key is rotated), answers it
once, and sends only its hash on; the gateway compares the hash of the key a request
carries in :data:`INVOKE_KEY_HEADER`. The key is 256 random bits, so a plain SHA-256 is
enough: nobody can guess or brute-force such a key from its hash, and a slow password hash
(or a salt) would only cost the gateway time on every call. A database or NATS reader
learns hashes, never keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

INVOKE_KEY_HEADER = "X-Pyfaas-Invoke-Key"
KEY_PREFIX = "pfk_"
"""Makes a leaked key recognisable to secret scanners and to people."""


def hash_invoke_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_invoke_key() -> tuple[str, str]:
    """A fresh key and its hash."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_invoke_key(key)


def key_matches(key: str, key_hash: str | None) -> bool:
    if not key_hash or not key:
        return False
    return hmac.compare_digest(hash_invoke_key(key), key_hash)
