"""``gossipml new NAME``: a folder with an experiment, its own model and data, and a README."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_project", "TEMPLATES"]

_EXPERIMENT = '''# {name}: 4 peers on a ring train the model in task.py on the data task.py loads.
# Run it with: gossipml run {name}/experiment.toml
name = "{name}"

[run]
n_peers = 4
deadline_s = 120

[data]
dataset = "task:load"        # your loader, in task.py beside this file
partition = "iid"
[data.dataset_args]
test_fraction = 0.25

[task]
model = "task:Net"           # your model, in task.py
optimizer = "adam"
lr = 0.01
batch_size = 16
[task.model_args]
hidden = 32

[topology]
kind = "ring"

[pacing]
mode = "sync"
timeout_s = 5.0
interval_steps = 5

[peer]
rounds = 30
eval_every_rounds = 10
'''

_TASK = '''"""The model and the data of {name}: edit both, gossipml imports them by name."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Net(nn.Module):
    """A small MLP; gossipml passes input_shape and num_classes (read from the data)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int = 32) -> None:
        super().__init__()
        n_in = int(np.prod(input_shape))
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(),
                                    nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def load(test_fraction: float = 0.25, seed: int = 0):
    """scikit-learn's wine data, standardised: (train, test) as (x, y) arrays.

    Return torch Datasets of (x, y) items instead if you have them; labels are class ids.
    """
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return (x[train].astype(np.float32), y[train]), (x[test].astype(np.float32), y[test])
'''

_README = '''# {name}

A gossipml experiment: 4 peers on a ring train `Net` (in `task.py`) on the data `load` returns.

    gossipml run {name}/experiment.toml

Results go to `runs/{name}-<time>/` (a summary, one event stream per peer, plots).
Change the model or the data in `task.py`; change peers, topology, pacing or compression in
`experiment.toml` (`gossipml schema --markdown` lists every key). The same files run one
peer per host with `gossipml peer {name}/experiment.toml --peers peers.toml --id N`.
'''

#: file name -> template (``{name}`` is the project's name)
TEMPLATES: dict[str, str] = {"experiment.toml": _EXPERIMENT, "task.py": _TASK,
                             "README.md": _README}


def write_project(folder: str | Path) -> list[Path]:
    """Write the templates into a new ``folder`` (its last part names the experiment)."""
    folder = Path(folder)
    name = folder.resolve().name
    if not name.replace("-", "_").isidentifier():
        raise ValueError(f"project name {name!r} must be letters, digits, '_' or '-' (it names "
                         f"the experiment); choose another")
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder} exists and is not empty; choose a new name or empty it")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, template in TEMPLATES.items():
        path = folder / file_name
        path.write_text(template.format(name=name))
        written.append(path)
    return written
