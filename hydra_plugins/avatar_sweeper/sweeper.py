"""The class `hydra/sweeper=avatar` (avatar's default) names: Hydra instantiates sweepers
only from the `hydra_plugins` package, and imports every module there at each start, so
this one stays tiny and hands the sweep over to avatar (avatar/cli/sweep.py `run_sweep`).

Hydra's basic sweeper, except that a sweep point that does not compose fails alone
(recorded as that job's error) and a sweep never writes into another sweep's dir.
"""

from __future__ import annotations

from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class AvatarSweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        from avatar.cli.sweep import run_sweep

        return run_sweep(self, arguments)
