"""Hydra only instantiates sweepers that live in the `hydra_plugins` namespace package; the code
is in experiments/sweep/. peftbench/__init__.py puts the repository root on sys.path so that this
portion of the namespace is found in an editable install too."""
from peftbench.experiments.sweep import PeftbenchSweeper as _Impl


class PeftbenchSweeper(_Impl):
    pass
