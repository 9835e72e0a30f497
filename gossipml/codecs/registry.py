"""The one registry of codec names: what the spec parser accepts and what decodes a payload.

A leaf module (it imports only :mod:`.base`): every codec module registers its names here with
:func:`register_codec`, at the end of the module; ``gossipml/codecs/__init__.py`` imports every
built-in codec module, and Python runs a package's ``__init__`` before any of its modules, so the
built-ins are registered before anything can look one up. A name registered twice raises.

Each :class:`CodecEntry` says how to build the codec from spec parameters, which parameters it
takes, and its role in a spec: ``"value"`` codecs (dense, quantizing) encode values and may follow
``>`` (``topk:0.01>q8``) or serve as a ``+bysize`` small codec; ``"select"`` codecs (sparse) pick
entries and may come before ``>``; ``"matrix"`` codecs (low-rank) do neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from gossipml.codecs.base import Codec, CodecError, Payload

__all__ = [
    "CodecEntry", "Registry", "ROLES", "register_codec", "default_registry", "codec_entry",
    "decode_payload",
]

#: Roles a codec plays in a spec (module docstring).
ROLES: tuple[str, ...] = ("value", "select", "matrix")

#: (params, value codec or None) -> codec; raises ValueError naming a bad parameter.
CodecMaker = Callable[[Mapping[str, Any], "Codec | None"], Codec]


@dataclass(frozen=True)
class CodecEntry:
    """One codec name: its builder, the spec keys it takes, the key a bare first value fills
    (``"q8:256"`` is ``block=256``), the key a bare whole number >= 1 fills instead
    (``"topk:100"`` is ``count=100``, ``"topk:0.01"`` is ``fraction=0.01``), and its role."""

    name: str
    make: CodecMaker
    keys: tuple[str, ...] = ()
    positional: str | None = None
    role: str = "value"
    count_key: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c in self.name for c in ":>+="):
            raise ValueError(f"codec name must be a non-empty string without ':>+=', "
                             f"got {self.name!r}")
        if self.role not in ROLES:
            raise ValueError(f"codec {self.name!r}: role must be one of {list(ROLES)}, "
                             f"got {self.role!r}")
        for key in (self.positional, self.count_key):
            if key is not None and key not in self.keys:
                raise ValueError(f"codec {self.name!r}: positional key {key!r} is not one of "
                                 f"its keys {list(self.keys)}")

    @property
    def encodes_values(self) -> bool:
        """True for codecs that may encode a sparse codec's values (after ``>``)."""
        return self.role == "value"

    @property
    def selects(self) -> bool:
        """True for codecs that pick entries (allowed before ``>``)."""
        return self.role == "select"


class Registry:
    """Codec name -> :class:`CodecEntry`; a duplicate name raises. Decoders are built from the
    entries with default parameters on first use (a payload's meta carries the rest)."""

    def __init__(self) -> None:
        self._entries: dict[str, CodecEntry] = {}
        self._decoders: dict[str, Codec] = {}

    def register(self, entry: CodecEntry) -> None:
        """Add ``entry``; ValueError if its name is taken."""
        if entry.name in self._entries:
            raise ValueError(f"codec name {entry.name!r} is already registered; pick another name")
        self._entries[entry.name] = entry

    def add(self, name: str, codec: Codec) -> None:
        """Register a ready-made codec under ``name`` (a value codec taking no parameters)."""
        self.register(CodecEntry(name, lambda params, values: codec))
        self._decoders[name] = codec

    def entry(self, name: object) -> CodecEntry:
        """The entry for ``name``; ValueError naming the known ones otherwise."""
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(f"unknown codec {name!r}; known: {self.names()}")
        return self._entries[name]

    def get(self, name: object) -> Codec:
        """A codec able to decode payloads named ``name``; CodecError for unknown names."""
        if not isinstance(name, str) or name not in self._entries:
            raise CodecError(f"unknown codec {name!r}; known: {self.names()}")
        if name not in self._decoders:
            self._decoders[name] = self._entries[name].make({}, None)
        return self._decoders[name]

    def names(self, role: str | None = None) -> list[str]:
        """Registered names (of one role, if given), sorted."""
        return sorted(n for n, e in self._entries.items() if role in (None, e.role))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries


_CODECS = Registry()


def default_registry() -> Registry:
    """The registry the spec parser and :func:`decode_payload` read."""
    return _CODECS


def register_codec(name: str, make: CodecMaker, *, keys: tuple[str, ...] = (),
                   positional: str | None = None, role: str = "value",
                   count_key: str | None = None) -> None:
    """Register a codec name for specs, TOML and decoding; a name already taken raises."""
    _CODECS.register(CodecEntry(name, make, tuple(keys), positional, role, count_key))


def codec_entry(name: object) -> CodecEntry:
    """The registered entry for ``name``; ValueError naming the known names otherwise."""
    return _CODECS.entry(name)


def decode_payload(payload: Payload, device: torch.device | str = "cpu") -> torch.Tensor:
    """Decode any registered payload on ``device``; every malformed payload raises CodecError."""
    if not isinstance(payload, Payload):
        raise CodecError(f"expected a Payload, got {type(payload).__name__}")
    codec = _CODECS.get(payload.codec)
    try:
        return codec.decode(payload, device)
    except CodecError:
        raise
    except (ValueError, TypeError, RuntimeError, IndexError, KeyError, OverflowError) as exc:
        # A check we missed: still a bad payload from the peer's point of view, not a crash.
        raise CodecError(f"codec {payload.codec!r} could not decode: {exc}") from exc
