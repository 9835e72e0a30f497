"""Starting peers with what sites already run: launcher environments (Slurm, torchrun, MPI,
Kubernetes) in :mod:`gossipml.launch.env`, plain ``ssh`` to a hosts file in :mod:`gossipml.launch.ssh`."""

from __future__ import annotations

from gossipml.launch.env import LaunchInfo, detect_launch_env, expand_slurm_nodelist

__all__ = ["LaunchInfo", "detect_launch_env", "expand_slurm_nodelist"]
