"""Pseudonymise person identifiers with a keyed hash before they reach storage or logs.

A pseudonym is `p_` + the first 24 hex chars of HMAC-SHA256(key, person id): stable for a key, so
analysts can follow one person across tables, and reversible only by someone who holds the key and
the population register (the privileged path recomputes pseudonyms for candidate ids).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from functools import lru_cache

from streams.config import DEV_PSEUDONYM_KEY, Settings

log = logging.getLogger(__name__)
PREFIX = "p_"


class Pseudonymizer:
    """Maps person ids to pseudonyms; caches recent ids since the same people recur."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.pseudonym = lru_cache(maxsize=1 << 18)(self._compute)

    @classmethod
    def from_settings(cls, settings: Settings) -> Pseudonymizer:
        key = settings.pseudonym_key.get_secret_value()
        if key == DEV_PSEUDONYM_KEY:
            log.warning(
                "using the development pseudonym key: set FUNDWATCH_PSEUDONYM_KEY in production"
            )
        return cls(key.encode())

    def _compute(self, person_id: str) -> str:
        digest = hmac.new(self._key, person_id.encode(), hashlib.sha256).hexdigest()
        return PREFIX + digest[:24]

    def matches(self, person_id: str, pseudonym: str) -> bool:
        """Re-identification check for the privileged path: is this pseudonym this person?"""
        return hmac.compare_digest(self.pseudonym(person_id), pseudonym)
