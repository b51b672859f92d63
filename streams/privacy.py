"""Pseudonymise person identifiers with a keyed hash before they reach storage or logs.

A pseudonym is `p_` + the first 24 hex chars of HMAC-SHA256(key, person id): stable for a key, so
analysts can follow one person across tables, and reversible only by someone who holds the key and
the population register (the privileged path recomputes pseudonyms for candidate ids).

The privileged re-identification path: with `FUNDWATCH_REIDENTIFY_KEY` set, the sink also writes
`person_vault` rows (pseudonym -> the person id encrypted with AES-256-GCM under that key, the
pseudonym as associated data), which only the `fundwatch_reidentifier` ClickHouse role may read,
and `fundwatch reidentify PSEUDONYM` decrypts them. Without the key no vault row is written.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import time
from functools import lru_cache
from typing import Any

from streams.config import DEV_PSEUDONYM_KEY, Settings

log = logging.getLogger(__name__)
PREFIX = "p_"
PSEUDONYM_RE = re.compile(r"^p_[0-9a-f]{24}$")
VAULT_TABLE = "person_vault"
_VAULT_INFO = b"fundwatch person vault v1"


class Pseudonymizer:
    """Maps person ids to pseudonyms; caches recent ids since the same people recur."""

    def __init__(self, key: bytes, vault: PersonVault | None = None) -> None:
        self._key = key
        self.vault = vault
        self._vault_rows: list[tuple[str, tuple[Any, ...]]] = []
        self.pseudonym = lru_cache(maxsize=1 << 18)(self._compute)

    @classmethod
    def from_settings(cls, settings: Settings, with_vault: bool = False) -> Pseudonymizer:
        """`with_vault`: record a vault row per new pseudonym when the re-identification key is
        configured (the sink; nothing else writes the vault)."""
        key = settings.pseudonym_key.get_secret_value()
        if key == DEV_PSEUDONYM_KEY:
            log.warning(
                "using the development pseudonym key: set FUNDWATCH_PSEUDONYM_KEY in production"
            )
        vault = PersonVault.from_settings(settings) if with_vault else None
        return cls(key.encode(), vault)

    def _compute(self, person_id: str) -> str:
        digest = hmac.new(self._key, person_id.encode(), hashlib.sha256).hexdigest()
        pseudonym = PREFIX + digest[:24]
        if self.vault is not None:
            self._vault_rows.append((VAULT_TABLE, self.vault.row(pseudonym, person_id)))
        return pseudonym

    def take_vault_rows(self) -> list[tuple[str, tuple[Any, ...]]]:
        """The vault rows of the pseudonyms computed since the last call (empty without a
        vault); a pseudonym served from the cache adds none (the table keeps one per key)."""
        if not self._vault_rows:
            return []
        rows, self._vault_rows = self._vault_rows, []
        return rows

    def matches(self, person_id: str, pseudonym: str) -> bool:
        """Re-identification check for the privileged path: is this pseudonym this person?"""
        return hmac.compare_digest(self.pseudonym(person_id), pseudonym)


class VaultError(Exception):
    """Re-identification failed: no key, wrong key, or a tampered ciphertext."""


class PersonVault:
    """AES-256-GCM of person ids under a key derived (HKDF-SHA256) from the configured secret.

    A ciphertext is `v1:` + base64(12-byte random nonce + ciphertext + tag); the pseudonym is the
    associated data, so a ciphertext copied onto another pseudonym does not decrypt.
    """

    def __init__(self, secret: str) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        if not secret:
            raise VaultError("the re-identification key is empty")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_VAULT_INFO).derive(
            secret.encode()
        )
        self._aead = AESGCM(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> PersonVault | None:
        """The vault of FUNDWATCH_REIDENTIFY_KEY, or None when it is not configured."""
        secret = settings.reidentify_key
        return cls(secret.get_secret_value()) if secret is not None else None

    def seal(self, pseudonym: str, person_id: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, person_id.encode(), pseudonym.encode())
        return "v1:" + base64.b64encode(nonce + sealed).decode()

    def open(self, pseudonym: str, ciphertext: str) -> str:
        from cryptography.exceptions import InvalidTag

        if not ciphertext.startswith("v1:"):
            raise VaultError("unknown vault ciphertext version")
        raw = base64.b64decode(ciphertext[3:])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], pseudonym.encode()).decode()
        except InvalidTag as exc:
            raise VaultError(
                "the vault entry does not decrypt with this key (wrong key or tampered row)"
            ) from exc

    def row(self, pseudonym: str, person_id: str) -> tuple[Any, ...]:
        """A `person_vault` row: (pseudonym, ciphertext, sealed_at ms)."""
        return (pseudonym, self.seal(pseudonym, person_id), int(time.time() * 1000))
