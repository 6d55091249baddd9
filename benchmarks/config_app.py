"""A hello-world `@hydra.main` app that composes avatar's own config and prints one value.

The floor under any command built on avatar's config: Hydra composing
`conf/config.yaml` (the schema, the three stage groups, the profile) with none of
the status's own work: no detection (the profile comes from AVATAR_PROFILE), no
profile files read, no validation, no status. The benchmark runs it beside
`python -m avatar` and the plain hello-world app, which splits the status's cost
into what the config costs under Hydra and what avatar's code adds to it.

    AVATAR_PROFILE=cpu python benchmarks/config_app.py
"""

from __future__ import annotations

import gc
import os
import sys

import hydra
from omegaconf import DictConfig

from avatar.config.compat import hydra_main_options
from avatar.config.compose import TRUSTED_TARGETS, register_config
from avatar.config.files import PRIMARY_CONFIG, builtin_conf_dir
from avatar.config.profiles import PROFILE_ENV, AutoProfile

if not os.environ.get(PROFILE_ENV):
    sys.exit(f"Set {PROFILE_ENV}=NAME: the profile `python -m avatar` picks on this machine.")
register_config(AutoProfile([builtin_conf_dir()]))  # the forced profile: no detection runs


@hydra.main(
    config_path=str(builtin_conf_dir()),
    config_name=PRIMARY_CONFIG,
    **hydra_main_options(*TRUSTED_TARGETS),
)
def main(cfg: DictConfig) -> None:
    print(cfg.profile.name)


if __name__ == "__main__":
    # As avatar's own entry point does (avatar.cli.app.run): the garbage collector skips the
    # objects that live as long as the process, so the two differ only in avatar's work.
    gc.freeze()
    try:
        main()
    finally:
        gc.freeze()
