"""Fixtures of the key audit: payload bytes and tiny digits tasks (the in-memory peers are in
tests/unit/conftest.py)."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch


def _payload_bytes(payload: Any) -> bytes:
    """Every buffer of a codec payload, concatenated."""
    return b"".join(bytes(memoryview(b).cast("B")) for b in payload.buffers)


@pytest.fixture
def wire_bytes() -> Callable[[Any, torch.Tensor], bytes]:
    """``wire_bytes(codec, x)``: the bytes of codec's first payload for ``x`` (plus its meta)."""

    def encode(codec: Any, x: torch.Tensor) -> bytes:
        payload, _ = codec.encode(x, None)
        return repr(sorted(payload.meta.items())).encode() + _payload_bytes(payload)

    return encode




@pytest.fixture(scope="session")
def digits() -> Any:
    """scikit-learn's digits, loaded once for every task built in the audit."""
    from gossipml.data import load_dataset

    return load_dataset("digits")
