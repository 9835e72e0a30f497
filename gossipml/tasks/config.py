"""The ``[task]`` table: model, local optimizer, batches, device and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gossipml.data.plugin import is_reference

__all__ = ["TaskConfig", "MODELS", "LINEAR_MODELS", "OPTIMIZERS", "LR_SCHEDULES"]

LINEAR_MODELS: tuple[str, ...] = ("logreg", "svm", "lstsq")
MODELS: tuple[str, ...] = ("mlp", "cnn", *LINEAR_MODELS)
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw", "lbfgs")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "linear", "step")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class TaskConfig:
    """What a peer trains and how: ``model`` (mlp, cnn, logreg, svm, lstsq), ``optimizer`` (sgd,
    adam, adamw, lbfgs) with ``lr``/``momentum``/``weight_decay``, ``batch_size`` items per step,
    ``device`` (auto, cpu, cuda, cuda:N), and evaluation on at most ``eval_max_samples`` test items
    in batches of ``eval_batch_size``. ``hidden`` is the mlp's width; ``same_init`` starts every
    peer from the same weights (seeded by the run seed) rather than from its own.

    ``lr_schedule`` sets the learning rate per local step: ``constant``, ``cosine`` or ``linear``
    decay to ``lr * lr_min_factor``, or ``step`` (times ``lr_gamma`` at each fraction in
    ``lr_milestones``), after ``warmup_steps`` of linear warm-up. The decay spans
    ``lr_decay_steps`` steps; 0 means the run's whole length (rounds times interval steps).

    Your own code: ``model = "module:callable"`` returns an ``nn.Module`` (keyword arguments from
    ``model_args``, plus ``input_shape`` and ``num_classes`` when its signature names them);
    ``loss`` and ``metric`` (``"module:callable"``, each ``f(outputs, targets)``; the metric's
    value over the test split is reported as the accuracy). Modules are looked up first in the
    ``import_path`` folders; the experiment file's folder is added when it is read."""

    model: str = "mlp"
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 32
    device: str = "auto"
    eval_batch_size: int = 1024
    eval_max_samples: int | None = None
    hidden: int = 128
    same_init: bool = True
    lbfgs_max_iter: int = 10
    lbfgs_history: int = 10
    lr_schedule: str = "constant"
    lr_min_factor: float = 0.0
    lr_milestones: tuple[float, ...] = (0.5, 0.75)
    lr_gamma: float = 0.1
    warmup_steps: int = 0
    lr_decay_steps: int = 0
    model_args: dict[str, Any] = field(default_factory=dict)
    loss: str | None = None
    metric: str | None = None
    import_path: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.model not in MODELS and not is_reference(self.model):
            raise ValueError(f"unknown model {self.model!r}; choose one of {list(MODELS)} or "
                             f"your own as 'module:callable'")
        self._check_plugin()
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of "
                             f"{list(OPTIMIZERS)}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        self._check_schedule()
        for name in ("batch_size", "eval_batch_size", "hidden", "lbfgs_max_iter",
                     "lbfgs_history"):
            _positive_int(name, getattr(self, name))
        if self.eval_max_samples is not None:
            _positive_int("eval_max_samples", self.eval_max_samples)
        dev = str(self.device)
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:")
                                                    and dev[5:].isdigit())):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {dev!r}")

    @property
    def is_plugin(self) -> bool:
        """Whether the model is the experiment's own (a ``module:callable`` reference)."""
        return is_reference(self.model)

    def _check_plugin(self) -> None:
        if not isinstance(self.model_args, dict):
            raise ValueError(f"model_args must be a table of keyword arguments, got "
                             f"{self.model_args!r}")
        if self.model_args and not self.is_plugin:
            raise ValueError(f"model_args are for a 'module:callable' model; model "
                             f"{self.model!r} takes none (remove [task.model_args])")
        for name in ("loss", "metric"):
            value = getattr(self, name)
            if value is not None and not is_reference(value):
                raise ValueError(f"{name} must be 'module:callable' (a function of outputs and "
                                 f"targets) or unset, got {value!r}")
        paths = self.import_path
        if isinstance(paths, str) or not all(isinstance(p, str) for p in paths):
            raise ValueError(f"import_path must be a list of folders, got {paths!r}")
        object.__setattr__(self, "import_path", tuple(paths))

    @property
    def schedules_lr(self) -> bool:
        """Whether the learning rate changes over the run (a schedule or a warm-up)."""
        return self.lr_schedule != "constant" or self.warmup_steps > 0

    def _check_schedule(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of "
                             f"{list(LR_SCHEDULES)}")
        if not _is_number(self.lr_min_factor) or not 0 <= self.lr_min_factor <= 1:
            raise ValueError(f"lr_min_factor must be a number in [0, 1], got "
                             f"{self.lr_min_factor!r}")
        if not _is_number(self.lr_gamma) or not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must be a number in (0, 1], got {self.lr_gamma!r}")
        marks = list(self.lr_milestones) if isinstance(self.lr_milestones, (list, tuple)) \
            else [self.lr_milestones]
        if any(not _is_number(m) or not 0 < m < 1 for m in marks) or marks != sorted(marks):
            raise ValueError(f"lr_milestones must be increasing fractions in (0, 1), got "
                             f"{self.lr_milestones!r}")
        object.__setattr__(self, "lr_milestones", tuple(float(m) for m in marks))
        for name in ("warmup_steps", "lr_decay_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
