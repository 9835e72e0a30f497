"""Sparsifying codecs: ``topk`` (by magnitude), ``randk`` (shared seed, no indices sent) and
``threshold`` (entries past a threshold: a significance filter of a change, see
:class:`ThresholdCodec`).

Values go raw in the tensor's dtype, or through a value codec (chaining, ``"topk:0.01>q8"``):
the value payload's meta is flattened into this payload's meta under the ``"v."`` prefix and its
buffers follow this codec's own. Decoding gives a dense tensor, zeros where nothing was sent.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from gossipml.codecs._util import (dtype_name, header, meta_int, to_buffer,
                                   view_buffer, work_dtype)
from gossipml.codecs.base import Codec, CodecError, Payload
from gossipml.codecs.registry import (codec_entry, decode_payload, default_registry,
                                       register_codec)
from gossipml.ops.sparse import index_dtype, random_indices, topk_magnitude

__all__ = ["TopKCodec", "RandKCodec", "ThresholdCodec", "resolve_k"]

_RAW = "raw"


def resolve_k(numel: int, fraction: float | None, count: int | None) -> int:
    """Number of entries to keep: ``count`` if given, else ``ceil(fraction * numel)`` (>= 1)."""
    if numel == 0:
        return 0
    if count is not None:
        return min(numel, int(count))
    return min(numel, max(1, math.ceil(float(fraction or 0.0) * numel)))


class _Sparse:
    """Shared encode/decode of (positions, values); subclasses pick the positions."""

    name = ""
    n_aux = 0  # own buffers before the values' buffers

    def __init__(self, value_codec: Codec | None = None) -> None:
        self.value_codec = value_codec

    def _encode_values(self, values: torch.Tensor, dtype: torch.dtype, state: Any):
        """(meta, buffers, decoded values, value state) for the kept values."""
        if self.value_codec is None:
            vals = values.to(dtype)
            return {"values": _RAW}, (to_buffer(vals),), vals, state
        payload, state = self.value_codec.encode(values.to(dtype), state)
        meta = {"values": payload.codec, **{f"v.{k}": v for k, v in payload.meta.items()}}
        return meta, tuple(payload.buffers), None, state

    def _decode_values(self, payload: Payload, dtype: torch.dtype, k: int,
                       device: torch.device | str) -> torch.Tensor:
        buffers = payload.buffers[self.n_aux:] if isinstance(payload.buffers, (tuple, list)) else ()
        meta = payload.meta if isinstance(payload.meta, Mapping) else {}
        vname = meta.get("values")
        if vname == _RAW:
            if len(buffers) != 1:
                raise CodecError(f"{self.name}: expected 1 value buffer, got {len(buffers)}")
            return view_buffer(buffers[0], dtype, k, f"{self.name} values").to(device)
        if vname not in default_registry() or not codec_entry(vname).encodes_values:
            raise CodecError(f"{self.name}: meta['values'] must be 'raw' or a dense codec name, "
                             f"got {vname!r}")
        vmeta = {k2[2:]: v for k2, v in meta.items() if isinstance(k2, str) and k2.startswith("v.")}
        inner = Payload(vname, dtype_name(dtype), (k,), vmeta, tuple(buffers))
        return decode_payload(inner, device)

    def decode(self, payload: Payload, device: torch.device | str = "cpu") -> torch.Tensor:
        """Dense tensor: the sent values at their positions, zeros elsewhere. Every size is
        checked before anything of ``numel`` is built: ``k <= numel`` and the index and value
        buffers hold exactly k items, so the only allocation is the tensor itself (plus its
        positions)."""
        dtype, shape, numel = header(payload)
        k = meta_int(payload.meta, "k", 0, numel)
        vals = self._decode_values(payload, dtype, k, device)
        if vals.shape != (k,):
            raise CodecError(f"{self.name}: values decode to {tuple(vals.shape)}, expected ({k},)")
        idx = self._positions(payload, numel, k)
        out = torch.zeros(numel, dtype=dtype, device=device)
        out[idx.to(device=device, dtype=torch.int64)] = vals.to(dtype)
        return out.reshape(shape)

    def estimate_nbytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """Wire bytes for k raw values and their indices (an estimate when chained)."""
        n = math.prod(shape)
        k = self._k(n)
        item = torch.empty(0, dtype=dtype).element_size()
        idx = torch.empty(0, dtype=index_dtype(n)).element_size() if self.n_aux else 0
        return k * (item + idx)

    def _k(self, numel: int) -> int:
        return numel

    def _positions(self, payload: Payload, numel: int, k: int) -> torch.Tensor:
        raise NotImplementedError

    def _read_indices(self, payload: Payload, numel: int, k: int) -> torch.Tensor:
        if not isinstance(payload.buffers, (tuple, list)) or len(payload.buffers) < 1:
            raise CodecError(f"{self.name}: payload has no index buffer")
        idx = view_buffer(payload.buffers[0], index_dtype(numel), k, f"{self.name} indices")
        if k and (int(idx.min()) < 0 or int(idx.max()) >= numel):
            raise CodecError(f"{self.name}: indices out of range [0, {numel})")
        return idx


class _KOfN(_Sparse):
    """Sparse codecs that keep k of n entries: ``fraction`` of them, or ``count``."""

    def __init__(self, fraction: float | None = 0.01, count: int | None = None,
                 value_codec: Codec | None = None, seed: int = 0) -> None:
        super().__init__(value_codec)
        self.fraction, self.count, self.seed = fraction, count, seed

    def _k(self, numel: int) -> int:
        return resolve_k(numel, self.fraction, self.count)



class TopKCodec(_KOfN):
    """The k largest-magnitude entries (``fraction`` of them, or ``count``) with their indices.
    Bound: ``||x - x'||^2 <= (1 - k/n) ||x||^2`` with raw values (kept entries exact)."""

    name = "topk"
    n_aux = 1

    def encode(self, tensor: torch.Tensor, state: Any) -> tuple[Payload, Any]:
        """Indices (int32 when they fit) and the values at them."""
        flat = tensor.detach().reshape(-1)
        k = self._k(flat.numel())
        idx = topk_magnitude(flat, k, seed=self.seed)
        meta, vbufs, _, state = self._encode_values(flat[idx], tensor.dtype, state)
        ibuf = to_buffer(idx.to(index_dtype(flat.numel())))
        return Payload(self.name, dtype_name(tensor.dtype), tuple(tensor.shape),
                       {"k": k, **meta}, (ibuf, *vbufs)), state

    def _positions(self, payload: Payload, numel: int, k: int) -> torch.Tensor:
        return self._read_indices(payload, numel, k)


class RandKCodec(_KOfN):
    """k entries at positions drawn from a per-call seed carried in meta (no indices sent).
    Bound: ``||x - x'||^2 <= ||x||^2``, in expectation ``(1 - k/n) ||x||^2``."""

    name = "randk"

    def encode(self, tensor: torch.Tensor, state: Any) -> tuple[Payload, Any]:
        """The values at seeded random positions; state = (call counter, value codec state)."""
        from gossipml.codecs.quant import _mix

        step, vstate = state if state is not None else (0, None)
        flat = tensor.detach().reshape(-1)
        k = self._k(flat.numel())
        seed = _mix(self.seed, step)
        idx = random_indices(flat.numel(), k, seed, flat.device)
        meta, vbufs, _, vstate = self._encode_values(flat[idx], tensor.dtype, vstate)
        return Payload(self.name, dtype_name(tensor.dtype), tuple(tensor.shape),
                       {"k": k, "seed": seed, **meta}, vbufs), (step + 1, vstate)

    def _positions(self, payload: Payload, numel: int, k: int) -> torch.Tensor:
        seed = meta_int(payload.meta, "seed", 0, (1 << 63) - 1)
        return random_indices(numel, k, seed)


class ThresholdCodec(_Sparse):
    """A significance filter: sends the entries of its input with ``|v| > threshold`` (and any
    non-finite one, so a broken model is never hidden), with their indices; decode gives that
    sparse tensor, zeros elsewhere. Stateless: it keeps no copy of its own. Its input is always a
    change against the receiver's copy, ``x - x_hat`` (:class:`gossipml.peer.stream.Outbox` keeps
    one ``x_hat`` per receiver, with ``content = "params"`` or ``"delta"`` alike), so after the
    receiver adds the decoded change, ``|x - x_hat| <= threshold`` elementwise with raw values
    (with a value codec, ``threshold>q8``, sent entries carry that codec's error until resent)."""

    name = "threshold"
    n_aux = 1

    def __init__(self, threshold: float = 1e-3, value_codec: Codec | None = None) -> None:
        super().__init__(value_codec)
        if not threshold >= 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.threshold = float(threshold)

    def encode(self, tensor: torch.Tensor, state: Any) -> tuple[Payload, Any]:
        """Indices and values of the entries past the threshold; state = the value codec's."""
        flat = tensor.detach().reshape(-1)
        # not (|v| <= t) rather than |v| > t: NaN and inf go out, the receiver's checks refuse them
        idx = (~(flat.to(work_dtype(flat.dtype)).abs() <= self.threshold)).nonzero().squeeze(1)
        meta, vbufs, _, state = self._encode_values(flat[idx], tensor.dtype, state)
        ibuf = to_buffer(idx.to(index_dtype(flat.numel())))
        return Payload(self.name, dtype_name(tensor.dtype), tuple(tensor.shape),
                       {"k": int(idx.numel()), **meta}, (ibuf, *vbufs)), state

    def _positions(self, payload: Payload, numel: int, k: int) -> torch.Tensor:
        return self._read_indices(payload, numel, k)


def _k_of_n_maker(cls: type[_KOfN]):
    """Builder of ``topk`` / ``randk`` from spec parameters (``fraction`` or ``count``)."""
    def make(params: Mapping[str, Any], values: Codec | None = None) -> _KOfN:
        frac, count = params.get("fraction"), params.get("count")
        if count is None:
            frac = 0.01 if frac is None else float(frac)
            if not 0 < frac <= 1:
                raise ValueError(f"{cls.name}: fraction must be in (0, 1], got {frac}")
        elif int(count) < 1:
            raise ValueError(f"{cls.name}: count must be >= 1, got {count}")
        return cls(frac, None if count is None else int(count), values, int(params.get("seed", 0)))

    return make


for _cls in (TopKCodec, RandKCodec):
    register_codec(_cls.name, _k_of_n_maker(_cls), keys=("fraction", "count", "seed"),
                   positional="fraction", count_key="count", role="select")
register_codec("threshold", lambda params, values: ThresholdCodec(
    float(params.get("threshold", 1e-3)), values), keys=("threshold",), positional="threshold",
    role="select")
