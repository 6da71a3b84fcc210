"""Subresource Integrity (SRI) strings: parse, normalise, and check.

An integrity string is what the web's ``integrity=`` attribute holds: one or more
space-separated ``<algorithm>-<base64 digest>`` tokens, for example
``"sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="``. ipybgfetch also accepts the
forms data people already have in their registries (pooch's habit) and converts them:

==========================  ===================================================
accepted token              normalised to
==========================  ===================================================
``sha256-<base64>``         itself (base64url and missing padding are repaired)
``sha256:<hex>``            ``sha256-<base64>`` (also ``sha384:``, ``sha512:``)
``<64 hex digits>``         ``sha256-<base64>`` (96 hex -> sha384, 128 -> sha512)
==========================  ===================================================

The engine verifies a downloaded body with :func:`sri_to_hashes` (or the incremental
:class:`IntegrityHasher`): per the SRI spec, only the *strongest* algorithm present counts,
and the body matches if any digest of that algorithm equals the body's digest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable

__all__ = [
    "ALGORITHMS",
    "IntegrityHasher",
    "digest_to_sri",
    "parse_integrity",
    "sri_to_hashes",
    "strongest_hashes",
]

#: Algorithms SRI defines, weakest first, with their digest sizes in bytes.
ALGORITHMS: dict[str, int] = {"sha256": 32, "sha384": 48, "sha512": 64}

_HEX_LENGTH_TO_ALGORITHM = {2 * size: name for name, size in ALGORITHMS.items()}
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_SRI_PREFIX_RE = re.compile(r"([A-Za-z][A-Za-z0-9]*)-")
_SUPPORTED = ", ".join(ALGORITHMS)
_FORMS = (
    "'sha256-<base64>' (SRI, also sha384-/sha512-), 'sha256:<hex>' (pooch style), "
    "or a bare hex digest (64 hex digits = sha256)"
)


def digest_to_sri(algorithm: str, digest: bytes) -> str:
    """The SRI token for a raw digest: ``digest_to_sri("sha256", h.digest())``."""
    algorithm = algorithm.lower()
    size = ALGORITHMS.get(algorithm)
    if size is None:
        raise ValueError(f"Unsupported integrity algorithm {algorithm!r}; use one of {_SUPPORTED}.")
    if len(digest) != size:
        raise ValueError(f"A {algorithm} digest is {size} bytes long, got {len(digest)} bytes.")
    return f"{algorithm}-{base64.b64encode(digest).decode('ascii')}"


def _weak_hint(algorithm: str) -> str:
    if algorithm in {"md5", "sha1"}:
        return " (too weak for integrity checks, and SRI does not define it)"
    return ""


def _parse_token(token: str) -> tuple[str, bytes]:
    """One integrity token -> (algorithm, digest bytes). Raises ValueError."""
    prefix = _SRI_PREFIX_RE.match(token)
    if prefix is not None:
        algorithm = prefix.group(1).lower()
        if algorithm not in ALGORITHMS:
            raise ValueError(
                f"Integrity token {token!r}: unsupported algorithm {algorithm!r}"
                f"{_weak_hint(algorithm)}; use one of {_SUPPORTED}."
            )
        value = token[prefix.end() :]
        # SRI allows "?options" after the digest; none are defined, so drop them.
        value = value.split("?", 1)[0]
        if not _BASE64_RE.fullmatch(value):
            raise ValueError(
                f"Integrity token {token!r}: the part after '{algorithm}-' is not base64."
            )
        value = value.rstrip("=").replace("-", "+").replace("_", "/")
        value += "=" * (-len(value) % 4)
        try:
            digest = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(
                f"Integrity token {token!r}: the part after '{algorithm}-' is not valid "
                f"base64 ({exc})."
            ) from None
        expected = ALGORITHMS[algorithm]
        if len(digest) != expected:
            raise ValueError(
                f"Integrity token {token!r}: a {algorithm} digest is {expected} bytes "
                f"({len(base64.b64encode(bytes(expected)))} base64 characters), this one "
                f"decodes to {len(digest)} bytes."
            )
        return algorithm, digest

    if ":" in token:
        algorithm, value = token.split(":", 1)
        algorithm = algorithm.lower()
        if algorithm not in ALGORITHMS:
            raise ValueError(
                f"Integrity token {token!r}: unsupported algorithm {algorithm!r}"
                f"{_weak_hint(algorithm)}; use one of {_SUPPORTED}."
            )
        expected = ALGORITHMS[algorithm]
        if not _HEX_RE.fullmatch(value) or len(value) != 2 * expected:
            raise ValueError(
                f"Integrity token {token!r}: a {algorithm} digest in hex is "
                f"{2 * expected} hex digits, got {value!r}."
            )
        return algorithm, bytes.fromhex(value)

    if _HEX_RE.fullmatch(token):
        algorithm = _HEX_LENGTH_TO_ALGORITHM.get(len(token))
        if algorithm is None:
            raise ValueError(
                f"Integrity token {token!r}: a bare hex digest must be 64 (sha256), "
                f"96 (sha384) or 128 (sha512) hex digits, this one has {len(token)}."
            )
        return algorithm, bytes.fromhex(token)

    raise ValueError(f"Integrity token {token!r} is not recognised; write it as {_FORMS}.")


def _parse_all(integrity: str) -> list[tuple[str, bytes]]:
    if not isinstance(integrity, str):
        raise TypeError(f"An integrity value must be a str, got {type(integrity).__name__}.")
    tokens = integrity.split()
    if not tokens:
        raise ValueError(f"The integrity value is empty; write it as {_FORMS}.")
    seen: list[tuple[str, bytes]] = []
    for token in tokens:
        parsed = _parse_token(token)
        if parsed not in seen:
            seen.append(parsed)
    return seen


def parse_integrity(token: str) -> str:
    """Validate an integrity value and return its normalised SRI form.

    ``token`` may hold several whitespace-separated tokens (each one any accepted form);
    the result joins their SRI forms with single spaces, duplicates removed, order kept.

    >>> parse_integrity("sha256:" + "00" * 32)
    'sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='

    Raises ``ValueError`` (naming the bad token and the accepted forms) when a token is
    malformed, uses an unsupported algorithm, or has the wrong digest length.
    """
    return " ".join(digest_to_sri(algorithm, digest) for algorithm, digest in _parse_all(token))


def sri_to_hashes(sri: str) -> list[tuple[str, bytes]]:
    """Every ``(algorithm, digest)`` pair in an integrity value, in order, no duplicates.

    Accepts the same forms as :func:`parse_integrity`. ``algorithm`` is a name that
    :func:`hashlib.new` understands (``"sha256"``, ``"sha384"``, ``"sha512"``).
    """
    return _parse_all(sri)


def strongest_hashes(hashes: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The pairs of the strongest algorithm present (SRI's "get the strongest metadata").

    A body matches an integrity value when its digest equals ANY of these digests.
    """
    pairs = list(hashes)
    if not pairs:
        return []
    order = list(ALGORITHMS)
    best = max(order.index(algorithm) for algorithm, _ in pairs)
    return [pair for pair in pairs if order.index(pair[0]) == best]


class IntegrityHasher:
    """Hash a body while it streams to disk: its sha256 (a record's ``sha256`` column),
    and the check against an integrity value, if one is given.

    >>> hasher = IntegrityHasher("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
    >>> hasher.update(b"")
    >>> hasher.matches()
    True

    Only the strongest algorithm in the value is computed (that is all SRI consults); when
    it is sha256 (the common case) one hash serves both, so each byte is hashed once.
    Call :meth:`reset` when a download restarts from zero.
    """

    def __init__(self, integrity: str | None = None) -> None:
        self.integrity: str | None = parse_integrity(integrity) if integrity else None
        self.expected: list[tuple[str, bytes]] = (
            strongest_hashes(sri_to_hashes(integrity)) if integrity else []
        )
        self.algorithm: str = self.expected[0][0] if self.expected else "sha256"
        self.reset()

    def reset(self) -> None:
        """Forget everything fed so far (the body restarts from byte 0)."""
        self.sha256 = hashlib.sha256()
        self._other = hashlib.new(self.algorithm) if self.algorithm != "sha256" else None

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """Feed the next chunk of the body (on the writer thread: keep it this short)."""
        self.sha256.update(chunk)
        if self._other is not None:
            self._other.update(chunk)

    def actual(self) -> str:
        """The SRI token of what was fed so far (for error messages)."""
        return digest_to_sri(self.algorithm, (self._other or self.sha256).digest())

    def matches(self) -> bool:
        """True if the bytes fed so far match one of the expected digests (or none is
        expected)."""
        if not self.expected:
            return True
        digest = (self._other or self.sha256).digest()
        return any(hmac.compare_digest(digest, expected) for _, expected in self.expected)
