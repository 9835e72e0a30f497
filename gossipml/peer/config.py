"""The ``[peer]`` table: how one peer runs its loop (rounds, exchanges, keyframes, checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass

from gossipml.errors import ConfigError

__all__ = ["PeerConfig"]


@dataclass(frozen=True)
class PeerConfig:
    """How one peer runs its loop: rounds, local steps between exchanges, evaluation, waits."""

    rounds: int = 30
    eval_every_rounds: int = 5
    startup_timeout_s: float = 30.0  # wait this long for in-neighbours to say hello
    consensus_step: float = 1.0  # gamma: x <- x + gamma * (aggregate - x)
    keyframe_every_rounds: int = 10  # content = "delta": resend the reference every N rounds
    keyframe_codec: str = "identity"  # how keyframes travel ("q8": 4x fewer bytes, reference
    # becomes the decoded keyframe on both sides)
    refresh_every_rounds: int = 0  # content = "delta": every N rounds (not keyframes) send the
    refresh_codec: str = "q4"  # CHOCO delta through this dense codec instead (0: never)
    attack: str = ""  # Byzantine behaviour of the `attackers`: "scale:100", "nan", "noise:1"
    attackers: tuple[int, ...] = ()
    checkpoint_dir: str | None = None  # per-peer subfolders peer-<id>/; resume from the newest
    checkpoint_every_rounds: int = 0  # 0: never

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"[peer] rounds must be >= 1, got {self.rounds}")
        if self.eval_every_rounds < 1:
            raise ConfigError("[peer] eval_every_rounds must be >= 1")
        if self.startup_timeout_s <= 0:
            raise ConfigError("[peer] startup_timeout_s must be > 0")
        if not 0 < self.consensus_step <= 1:
            raise ConfigError("[peer] consensus_step must be in (0, 1]")
        if self.keyframe_every_rounds < 1:
            raise ConfigError("[peer] keyframe_every_rounds must be >= 1")
        from gossipml.codecs import build_codec

        for key in ("keyframe_codec", "refresh_codec"):
            try:
                build_codec(getattr(self, key))
            except ValueError as exc:
                raise ConfigError(f"[peer] {key}: {exc}") from None
        if isinstance(self.refresh_every_rounds, bool) or not isinstance(
                self.refresh_every_rounds, int) or self.refresh_every_rounds < 0:
            raise ConfigError("[peer] refresh_every_rounds must be an integer >= 0 (0 = never), "
                              f"got {self.refresh_every_rounds!r}")
        if self.checkpoint_every_rounds < 0:
            raise ConfigError("[peer] checkpoint_every_rounds must be >= 0 (0 = never)")
        if self.checkpoint_every_rounds and not self.checkpoint_dir:
            raise ConfigError("[peer] checkpoint_every_rounds needs checkpoint_dir")
        from gossipml.policies.attacks import check_attack

        try:
            check_attack(self.attack)
        except ValueError as exc:
            raise ConfigError(f"[peer] {exc}") from None
        if self.attackers and not self.attack:
            raise ConfigError("[peer] attackers are listed but no attack is set")
        object.__setattr__(self, "attackers", tuple(int(a) for a in self.attackers))
