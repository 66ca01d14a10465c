"""Anti-replay nonces (RFC 8555 §6.5) that any replica can mint and exactly one can redeem.

A nonce is `base64url(issued_at ‖ random ‖ HMAC(key, issued_at ‖ random)[:16])`. Minting
needs no database round trip: every replica holds the same key (kept in the database).
Redemption inserts the nonce into `used_nonce`, whose primary key makes a second
redemption fail on any replica. Nonces older than `lifetime` are refused without a
lookup, so the table only ever holds nonces younger than that and is pruned by age.

On SQLite a redemption is committed without waiting for its fsync (see `ca.storage.sql`), so a
power cut may forget it. The nonce still cannot be used again: `not_before` is the machine's
boot time there, and the nonces minted before it are refused.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
from datetime import datetime, timedelta, timezone
from typing import Callable

from ca.clock import Clock
from ca.problems import BadNonce

_TIME_LEN, _RANDOM_LEN, _MAC_LEN = 8, 16, 16
_NONCE_LEN = _TIME_LEN + _RANDOM_LEN + _MAC_LEN
NONCE_KEY_SETTING = "nonce-hmac-key"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding (RFC 8555 §6.1): reject padding and foreign characters."""
    if not isinstance(text, str) or not _BASE64URL.fullmatch(text):
        raise ValueError("not unpadded base64url")
    if len(text) % 4 == 1:
        raise ValueError("not base64url (impossible length)")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class NonceService:
    def __init__(
        self,
        key: bytes,
        clock: Clock,
        *,
        lifetime: timedelta = timedelta(minutes=30),
        randbytes: Callable[[int], bytes] = secrets.token_bytes,
        not_before: datetime | None = None,
    ) -> None:
        if len(key) < 32:
            raise ValueError("nonce key must be at least 32 bytes")
        self._key = key
        self._clock = clock
        self._randbytes = randbytes
        self.lifetime = lifetime
        self.not_before = not_before

    def issue(self) -> str:
        issued = int(self._clock.now().timestamp()).to_bytes(_TIME_LEN, "big")
        body = issued + self._randbytes(_RANDOM_LEN)
        return b64url(body + self._mac(body))

    def check(self, nonce: str) -> datetime:
        """Check a nonce's form, origin and age; return when it stops being redeemable.

        Redemption (single use) is the store's job: see `ca.storage.repository.redeem_nonce`.
        """
        try:
            raw = b64url_decode(nonce)
        except ValueError:
            raise BadNonce("nonce is not base64url") from None
        # The last character carries 4 bits base64 ignores: a second spelling of one nonce
        # would be a second row in used_nonce, so a second redemption.
        if b64url(raw) != nonce:
            raise BadNonce("nonce is not canonical base64url")
        if len(raw) != _NONCE_LEN:
            raise BadNonce("nonce was not issued by this server (wrong length)")
        body, mac = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise BadNonce("nonce was not issued by this server")
        issued = datetime.fromtimestamp(int.from_bytes(body[:_TIME_LEN], "big"), timezone.utc)
        if self.not_before is not None and issued < self.not_before:
            raise BadNonce("nonce was minted before the machine last started")
        expires = issued + self.lifetime
        if self._clock.now() >= expires:
            raise BadNonce("nonce has expired")
        return expires

    def _mac(self, body: bytes) -> bytes:
        return hmac.digest(self._key, body, "sha256")[:_MAC_LEN]
