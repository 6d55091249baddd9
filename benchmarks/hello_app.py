"""A hello-world `@hydra.main` app: the baseline `python -m avatar` is timed against.

It uses the same no-output-files settings as avatar (`hydra.run.dir=.`,
`hydra.output_subdir=null`, `hydra/job_logging=stdout`), so the comparison
measures what avatar adds on top of Hydra itself, not Hydra's file writing.
"""

from __future__ import annotations

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

ConfigStore.instance().store(
    name="hello",
    node={
        "defaults": [{"override hydra/job_logging": "stdout"}, "_self_"],
        "greeting": "hello world",
        "hydra": {"run": {"dir": "."}, "output_subdir": None, "job": {"chdir": False}},
    },
)


@hydra.main(version_base="1.3", config_path=None, config_name="hello")
def main(cfg: DictConfig) -> None:
    print(cfg.greeting)


if __name__ == "__main__":
    main()
