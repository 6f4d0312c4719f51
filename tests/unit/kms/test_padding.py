from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kamus_kms.errors import InvalidCiphertextError
from kamus_kms.padding import pad, unpad


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=64))
def test_padding_round_trips_to_a_bucket_multiple(data: bytes, bucket: int) -> None:
    padded = pad(data, bucket)
    assert len(padded) % bucket == 0
    assert len(padded) > len(data)
    assert unpad(padded) == data


def test_short_secrets_of_different_lengths_pad_to_the_same_size() -> None:
    assert {len(pad(b"x" * n, 32)) for n in range(32)} == {32}


@pytest.mark.parametrize("padded", [b"", b"\x00" * 32, b"abc", b"abc\x81\x00"])
def test_malformed_padding_is_an_invalid_ciphertext(padded: bytes) -> None:
    with pytest.raises(InvalidCiphertextError):
        unpad(padded)
