"""``CodecConfig`` and ``build_codec``: codecs from a short spec string or a TOML table.

Spec grammar (whitespace ignored)::

    spec     := stage [">" stage] ("+" modifier)*
    stage    := name (":" arg)*          arg := value | key=value
    modifier := "ef" | "delta" | "bysize" [":" min_numel [":" small_codec_name]]

``a>b`` chains: ``a`` (topk, randk or threshold) picks entries and ``b`` encodes their values.
``+ef`` wraps everything in error feedback, ``+bysize:4096:identity`` sends tensors under 4096
elements with ``identity``, ``+delta`` sends the change since the last exchange (CHOCO-SGD).
Examples: ``"q8"``, ``"q4:block=256+ef"``, ``"topk:0.01+ef"``, ``"topk:0.01>q8+ef"``,
``"lowrank:2:fallback=fp16+ef"``, ``"sign+ef+bysize:1024"``. The first positional value is
``block`` (q8/q4/q2/sign), ``fraction`` if < 1 else ``count`` (topk/randk), ``threshold`` or
``rank``. Table form: ``{name="topk", fraction=0.01, values="q8", error_feedback=true}``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from gossipml.codecs.base import Codec
from gossipml.codecs.combinators import BySize, ErrorFeedback
from gossipml.codecs.registry import codec_entry, default_registry

__all__ = ["CodecConfig", "build_codec", "parse_spec", "params_content_problem",
           "BIASED_OVER_PARAMS"]

#: CodecConfig fields that are a codec's parameters (which ones apply: the codec's entry keys).
_TABLE_KEYS = ("block", "stochastic", "seed", "fraction", "count", "threshold", "rank",
               "fallback", "min_gain")


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _parse_stage(text: str) -> tuple[str, dict[str, Any]]:
    name, *args = [a.strip() for a in text.split(":")]
    if name not in default_registry():
        raise ValueError(f"unknown codec {name!r} in spec; allowed: {default_registry().names()}")
    entry = codec_entry(name)
    params: dict[str, Any] = {}
    for i, arg in enumerate(args):
        if "=" in arg:
            key, val = (s.strip() for s in arg.split("=", 1))
        elif i == 0 and entry.positional is not None:
            key, val = entry.positional, arg
            whole = _value(arg)
            if entry.count_key is not None and isinstance(whole, int) and whole >= 1:
                key = entry.count_key
        else:
            raise ValueError(f"{name}: unexpected argument {arg!r}; use key=value with keys "
                             f"{list(entry.keys)}")
        if key not in entry.keys:
            raise ValueError(f"{name}: unknown parameter {key!r}; allowed: {list(entry.keys)}")
        params[key] = _value(val)
    return name, params


def parse_spec(spec: str) -> dict[str, Any]:
    """Parse a spec into ``{stages: [(name, params)], ef, delta, bysize: (min_numel, small)}``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"spec must be a non-empty codec spec like 'q8' or 'topk:0.01+ef', "
                         f"got {spec!r}")
    head, *mods = [p.strip() for p in spec.replace(" ", "").split("+")]
    stages = [_parse_stage(s) for s in head.split(">")]
    if len(stages) > 2 or (len(stages) == 2 and not codec_entry(stages[0][0]).selects):
        raise ValueError(f"chaining is 'A>B' with A in {default_registry().names('select')}, "
                         f"got {head!r}")
    if len(stages) == 2 and not codec_entry(stages[1][0]).encodes_values:
        raise ValueError(f"the value codec after '>' must be dense or quantizing, "
                         f"got {stages[1][0]!r}")
    plan: dict[str, Any] = {"stages": stages, "ef": False, "delta": False, "bysize": None}
    for mod in mods:
        name, *args = mod.split(":")
        if name in ("ef", "delta") and not args:
            plan[name] = True
        elif name == "bysize" and len(args) <= 2:
            min_numel = int(args[0]) if args else 4096
            small = args[1] if len(args) > 1 else "identity"
            if small not in default_registry() or codec_entry(small).selects:
                raise ValueError(f"bysize small codec must be a dense codec name, got {small!r}")
            plan["bysize"] = (min_numel, small)
        else:
            raise ValueError(f"unknown modifier '+{mod}'; allowed: +ef, +delta, "
                             "+bysize[:min_numel[:codec]]")
    if plan["ef"] and stages[0][0] == "threshold":
        raise ValueError("'threshold' with '+ef' double-counts the error: the receiver's copy "
                         "already carries every unsent change into the next round; drop '+ef'")
    if plan["ef"] and plan["delta"]:
        raise ValueError("'+ef' with '+delta' double-counts the error: CHOCO's reference x_hat "
                         "already feeds it back; drop '+ef'")
    return plan


#: Stages that cannot carry the model itself (``content = "params"``), with why: each names what
#: the receiver's average is made of, and the figure ``scripts/bench_convergence.py`` measured.
BIASED_OVER_PARAMS: dict[str, str] = {
    "topk": "sends a few coordinates of the model, so receivers average zeros into the rest, and "
            "'+ef' then adds every unsent coordinate back in ('topk:0.01+ef' measured 12 points "
            "below dense)",
    "randk": "sends a few coordinates of the model, so receivers average zeros into the rest",
    "lowrank": "sends a rank-r approximation of each weight matrix, which loses most of a "
               "trained model, and receivers average it in ('lowrank:2+ef' measured 58 points "
               "below dense)",
    "sign": "sends one bit per coordinate of the model, which becomes +-scale per block "
            "('sign' measured 21 points below dense, 'sign+ef' 3.4, 'sign+delta' 0.5)",
    "q2": "sends each coordinate of the model as one of 4 levels per block, an error of up to "
          "a sixth of the block's range ('q2' measured 10 points below dense, 'q2+ef' 2.1, "
          "'q2+delta' 0.0)",
}


def params_content_problem(plan: Mapping[str, Any]) -> str | None:
    """Why a parsed spec cannot send whole models (``content = "params"``), with what to send
    instead; None when it can. Dense codecs and 4- and 8-bit quantizers can (error at most
    range/30 per block; with '+ef' the error is fed into the next send, a temporal dither; q8+ef
    and q4+ef measured within 0.31 points of dense). Sparsifiers, low rank, sign and q2 send a
    few coordinates, or a few bits, of the *model* itself: only changes survive that
    (``threshold`` always sends changes, over one stream per receiver, so it is fine here;
    CHOCO-SGD, ``content = "delta"``, whose public copy x_hat plays the part of error
    feedback). Figures: ``scripts/bench_convergence.py --quick``, fmnist, 16 peers."""
    if plan["delta"]:
        return None
    name = plan["stages"][0][0]
    why = BIASED_OVER_PARAMS.get(name)
    if why is None:
        return None
    head = ">".join(":".join([n, *(f"{k}={v}" for k, v in p.items())]) for n, p in plan["stages"])
    if plan["bysize"] is not None:
        head += "+bysize:{}:{}".format(*plan["bysize"])
    return (f"codec {name!r} over content = \"params\" {why}. Send changes instead: "
            f"content = \"delta\" (spec \"{head}+delta\", without '+ef': CHOCO's x_hat already "
            f"feeds the error back), or set allow_biased_params = true to run it anyway")


def _make_stage(name: str, params: Mapping[str, Any], value_codec: Codec | None = None) -> Codec:
    return codec_entry(name).make(params, value_codec)


def _build_plan(plan: Mapping[str, Any]) -> Codec:
    stages = plan["stages"]
    value_codec = _make_stage(*stages[1]) if len(stages) == 2 else None
    codec = _make_stage(stages[0][0], stages[0][1], value_codec)
    if plan["bysize"] is not None:
        codec = BySize(codec, _make_stage(plan["bysize"][1], {}), plan["bysize"][0])
    return ErrorFeedback(codec) if plan["ef"] else codec


@dataclass(frozen=True)
class CodecConfig:
    """The ``[codec]`` table: either ``spec`` (see module docstring) or ``name`` plus fields.
    After construction ``spec`` always holds the canonical spec and ``content`` the content."""

    spec: str = "identity"
    name: str | None = None
    block: int | None = None
    stochastic: bool | None = None
    seed: int | None = None
    fraction: float | None = None
    count: int | None = None
    threshold: float | None = None
    rank: int | None = None
    fallback: str | None = None
    min_gain: float | None = None
    values: str | None = None  # chained value codec spec stage, e.g. "q8" or "q8:block=64"
    error_feedback: bool = False
    min_numel: int | None = None  # with ``small``: choose-by-size
    small: str | None = None
    content: str = "params"  # "params" (full parameters) or "delta" (CHOCO-SGD change)
    allow_biased_params: bool = False  # run a codec params_content_problem refuses, knowingly

    def __post_init__(self) -> None:
        if self.content not in ("params", "delta"):
            raise ValueError(f"content must be 'params' or 'delta', got {self.content!r}")
        spec = self._table_spec() if self.name is not None else self.spec
        plan = parse_spec(spec)
        if self.content == "delta" and not plan["delta"]:
            spec, plan["delta"] = spec + "+delta", True
        _build_plan(plan)  # validates every value
        if not isinstance(self.allow_biased_params, bool):
            raise ValueError(f"allow_biased_params must be true or false, got "
                             f"{self.allow_biased_params!r}")
        problem = params_content_problem(plan)
        if problem is not None and not self.allow_biased_params:
            raise ValueError(problem)
        object.__setattr__(self, "spec", spec)
        object.__setattr__(self, "content", "delta" if plan["delta"] else "params")
        object.__setattr__(self, "error_feedback", bool(plan["ef"]))

    def _table_spec(self) -> str:
        if self.name not in default_registry():
            raise ValueError(f"name {self.name!r} unknown; allowed: {default_registry().names()}")
        allowed = codec_entry(self.name).keys
        given = {k: getattr(self, k) for k in _TABLE_KEYS if getattr(self, k) is not None}
        bad = sorted(set(given) - set(allowed))
        if bad:
            raise ValueError(f"keys {bad} do not apply to {self.name!r}; "
                             f"it takes {list(allowed)}")
        spec = ":".join([self.name, *(f"{k}={v}" for k, v in given.items())])
        if self.values is not None:
            spec += f">{self.values}"
        if self.error_feedback:
            spec += "+ef"
        if self.min_numel is not None or self.small is not None:
            spec += f"+bysize:{self.min_numel if self.min_numel is not None else 4096}"
            spec += f":{self.small or 'identity'}"
        return spec

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> "CodecConfig":
        """From a TOML table; unknown keys raise naming the allowed ones."""
        allowed = {f.name for f in fields(cls)}
        bad = sorted(set(table) - allowed)
        if bad:
            raise ValueError(f"unknown [codec] key(s) {bad}; allowed: {sorted(allowed)}")
        return cls(**dict(table))


def build_codec(cfg_or_spec: CodecConfig | str | Mapping[str, Any]) -> Codec:
    """A codec from a CodecConfig, a spec string or a table (content is the caller's concern)."""
    if isinstance(cfg_or_spec, str):  # a bare codec: what it carries is the caller's concern
        return _build_plan(parse_spec(cfg_or_spec))
    if isinstance(cfg_or_spec, Mapping):
        cfg_or_spec = CodecConfig.from_table(cfg_or_spec)
    if not isinstance(cfg_or_spec, CodecConfig):
        raise TypeError(f"build_codec takes a CodecConfig, spec or table, got "
                        f"{type(cfg_or_spec).__name__}")
    return _build_plan(parse_spec(cfg_or_spec.spec))
