"""The class `hydra/launcher=slurm` names: Hydra instantiates launchers only from the
`hydra_plugins` package, and imports every module there at each start, so this one
stays tiny and hands over to avatar's launcher (avatar/cli/slurm.py) when a sweep starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class AvatarSlurmLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        self.params = params
        self.impl: Launcher | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from avatar.cli.slurm import SlurmSweepLauncher

        self.impl = SlurmSweepLauncher(**self.params)
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        assert self.impl is not None, "setup() first"
        return self.impl.launch(job_overrides, initial_job_idx)
