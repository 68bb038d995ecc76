"""Hydra only instantiates plugins that live in the `hydra_plugins` namespace package; the code is
in experiments/sweep/. peftbench/__init__.py puts the repository root on sys.path so that this
portion of the namespace is found in an editable install too."""
from typing import Any

from hydra.plugins.launcher import Launcher

from peftbench.experiments.sweep import PeftbenchSweeper as _Impl


class PeftbenchSweeper(_Impl):
    pass


class RayClusterLauncher(Launcher):
    """hydra/launcher=ray_cluster (experiments/sweep/ray_launcher.py). Ray is an optional extra:
    it is imported when this launcher is chosen, never while Hydra scans its plugins."""

    def __init__(self, **params: Any) -> None:
        from peftbench.experiments.sweep.ray_launcher import RayLauncher

        self.impl = RayLauncher(**params)

    def setup(self, **kwargs: Any) -> None:
        self.impl.setup(**kwargs)

    def launch(self, job_overrides, initial_job_idx):
        return self.impl.launch(job_overrides, initial_job_idx)
