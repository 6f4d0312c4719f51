"""Length-hiding padding applied inside the AEAD (ISO/IEC 7816-4: 0x80 then zeros).

Padding sits under the authentication tag, so a wrong pad can only be seen after the tag verified:
there is no padding oracle. The bucket is not stored; unpadding is self-describing.
"""

from __future__ import annotations

from kamus_kms.errors import InvalidCiphertextError

_MARKER = 0x80


def pad(data: bytes, bucket: int) -> bytes:
    """Append 0x80 and zeros up to the next multiple of `bucket` (always at least one byte)."""
    if bucket < 1:
        raise ValueError("padding bucket must be at least 1")
    total = (len(data) // bucket + 1) * bucket
    return data + bytes([_MARKER]) + bytes(total - len(data) - 1)


def unpad(padded: bytes) -> bytes:
    """Remove the padding; InvalidCiphertextError when it is not well formed."""
    end = len(padded.rstrip(b"\x00"))
    if end == 0 or padded[end - 1] != _MARKER:
        raise InvalidCiphertextError
    return padded[: end - 1]
