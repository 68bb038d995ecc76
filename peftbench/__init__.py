"""peftbench: parameter-efficient fine-tuning methods against full fine-tuning, measured.

The layers install beneath this one package and data flows one way through them:
conf -> methods -> experiments (runs, records) -> analysis (reports); the command line here sits
on top of them all.
"""
import sys as _sys
from pathlib import Path as _Path

# Hydra finds a sweeper only by scanning the `hydra_plugins` namespace, and it scans once per
# process, at the first config it composes. An editable install maps this checkout's packages
# through an import hook that such a scan cannot list, so the checkout's root must be on sys.path
# before anything composes a config (a study estimates its jobs before it runs them); in a wheel,
# hydra_plugins/peftbench_sweeper sits in site-packages and this does nothing.
_ROOT = _Path(__file__).resolve().parents[1]
if (_ROOT / "hydra_plugins" / "peftbench_sweeper").is_dir() and str(_ROOT) not in _sys.path:
    _sys.path.append(str(_ROOT))
