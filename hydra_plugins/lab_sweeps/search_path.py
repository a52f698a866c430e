"""Puts the repository's `sweeps/` folder on the search path of the lab app (`lab-train`).

`sweeps/` is a config root: its group `sweep/` holds the sweep configs that
`lab-train -m +sweep=NAME` selects. A plugin rather than `hydra.searchpath` in conf/train.yaml
because a `file://` search path there is relative to the working directory, and lab-train must
find its sweeps from any directory.
"""

from __future__ import annotations

import os

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONF_DIR = os.path.join(ROOT, "conf")
SWEEPS_DIR = os.path.join(ROOT, "sweeps")


class LabSweepsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        # Other Hydra apps in the same environment keep their own search path.
        lab_app = any(e.path in (CONF_DIR, f"file://{CONF_DIR}") for e in search_path.get_path())
        if lab_app and os.path.isdir(SWEEPS_DIR):
            search_path.append(provider="lab-sweeps", path=f"file://{SWEEPS_DIR}")
