"""load_config() for stage code, and the stage config groups it composes.

load_config must compose what the CLI composes (auto profile, stage groups, validation)
from a plain script, a test, an initialised Hydra context, and a running @hydra.main
app, without disturbing that app. Profiles choose lighter stage options; a choice on
the command line (or in the user's file) wins over the profile's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import REPO_ROOT, run_avatar
from fakes import FakeGPU, FakeNvmlModule, fake_nvml_env
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import OmegaConf

from avatar import load_config
from avatar.config.files import builtin_conf_dir
from avatar.errors import ConfigFileError, ConfigValueError

CONF_DIR = builtin_conf_dir()
GTX_1650 = FakeGPU("NVIDIA GeForce GTX 1650", total_mib=4096, used_mib=300)
RTX_3080 = FakeGPU("NVIDIA GeForce RTX 3080", total_mib=10240, used_mib=300)


def primary_choice(group: str) -> str:
    """The option conf/config.yaml chooses for a stage group."""
    for entry in OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml"))["defaults"]:
        if isinstance(entry, dict) and group in entry:
            return str(entry[group])
    raise AssertionError(f"config.yaml chooses no {group}")


def profile_choice(profile: str, group: str) -> str | None:
    """The option a profile file's defaults list overrides a stage group with, if any."""
    loaded = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "profile" / f"{profile}.yaml"))
    for entry in loaded.get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                if key.split("@")[0] == f"override /{group}":
                    return str(value)
    return None


def chained_message(exc: BaseException | None) -> str:
    """The exception's message and its causes', as Hydra prints them for the user."""
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__
    return "\n".join(parts)


# ------------------------------------------------------- profiles choose stages


@pytest.mark.parametrize(
    ("profile", "group"), [("low_vram", "lipsync"), ("cpu", "voice"), ("cpu", "lipsync")]
)
def test_a_profile_chooses_its_lighter_stage_option(profile: str, group: str) -> None:
    lighter = profile_choice(profile, group)
    assert lighter is not None and lighter != primary_choice(group)

    assert load_config([f"profile={profile}"])[group].name == lighter


def test_a_profile_without_stage_choices_keeps_the_defaults() -> None:
    cfg = load_config(["profile=rtx3080"])

    assert [cfg[g].name for g in ("voice", "lipsync", "enhance")] == [
        primary_choice(g) for g in ("voice", "lipsync", "enhance")
    ]


@pytest.mark.parametrize(
    "overrides",
    [["profile=low_vram", "lipsync=musetalk"], ["lipsync=musetalk", "profile=low_vram"]],
    ids=["after", "before"],
)
def test_the_command_line_stage_choice_wins_over_the_profiles(overrides: list[str]) -> None:
    assert load_config(overrides).lipsync.name == "musetalk"


def test_the_auto_profile_brings_its_stage_choices_and_the_command_line_still_wins(
    fake_nvml: Callable[..., FakeNvmlModule],
) -> None:
    fake_nvml([GTX_1650])

    auto = load_config()
    chosen = load_config(["lipsync=sadtalker"])

    assert (auto.profile.name, auto.lipsync.name) == (
        "low_vram",
        profile_choice("low_vram", "lipsync"),
    )
    assert (chosen.profile.name, chosen.lipsync.name) == ("low_vram", "sadtalker")


def test_a_stage_chosen_in_the_users_config_file_wins_over_the_profiles(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("defaults:\n  - config\n  - override lipsync: sadtalker\n  - _self_\n")

    assert load_config(["profile=low_vram"], config_file=mine).lipsync.name == "sadtalker"


def test_stage_settings_follow_the_profile_by_interpolation() -> None:
    for profile in ("low_vram", "rtx3080", "rtx4090"):
        cfg = load_config([f"profile={profile}", "lipsync=hallo"])
        assert cfg.lipsync.steps == cfg.profile.steps
        assert cfg.lipsync.precision == cfg.profile.precision
    cfg = load_config(["profile=rtx4090", "lipsync=musetalk", "batch_size=3", "precision=fp32"])
    assert (cfg.lipsync.batch_size, cfg.lipsync.precision.value) == (3, "fp32")


def test_a_stage_knob_set_on_the_command_line_beats_the_profile() -> None:
    cfg = load_config(["profile=rtx4090", "lipsync.batch_size=1"])

    assert cfg.lipsync.batch_size == 1 and cfg.batch_size == cfg.profile.batch_size


# ------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lipsync.batch_size=abc", "Value 'abc' of type 'str' could not be converted to Integer"),
        ("voice.temprature=0.5", "Key 'temprature' not in 'XTTSConfig'"),
        ("lipsync=nope", "Could not find 'lipsync/nope'"),
        ("enhance.precision=int8", "Invalid value 'int8', expected one of [fp32, fp16, bf16]"),
        ("pipeline.stages=[voice,ears]", "Invalid value 'ears', expected one of"),
    ],
)
def test_a_bad_stage_value_gets_hydras_message(override: str, message: str) -> None:
    with pytest.raises(HydraException) as raised:
        load_config(["profile=rtx3080", override])

    assert message in chained_message(raised.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("lipsync.batch_size=0", "lipsync.batch_size"),
        ("enhance.upscale=0", "enhance.upscale"),
        ("voice.top_p=1.5", "voice.top_p"),
        ("voice.language=xx", "voice.language"),
        ("lipsync.vram_growth.fixed_share=2", "lipsync.vram_growth.fixed_share"),
        ("pipeline.stages=[voice,voice]", "pipeline.stages"),
    ],
)
def test_an_out_of_range_stage_value_is_a_user_error_naming_the_key(
    override: str, key: str
) -> None:
    with pytest.raises(ConfigValueError, match=f"'{key}'|{key} lists"):
        load_config(["profile=rtx3080", override])


def test_an_out_of_range_value_in_the_users_file_names_that_file(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("defaults:\n  - config\n  - _self_\nlipsync:\n  fps: 0\n")

    with pytest.raises(ConfigValueError, match=r"'lipsync\.fps'") as info:
        load_config(["profile=rtx3080"], config_file=mine)

    assert str(info.value).endswith(f"The value is set in {mine.resolve()}.")
    assert info.value.key == "lipsync.fps"


def test_a_value_typed_on_the_command_line_names_no_file(tmp_path: Path) -> None:
    """The user's file sets it too, but the command line wins, and the user just typed it."""
    mine = tmp_path / "mine.yaml"
    mine.write_text("defaults:\n  - config\n  - _self_\nsteps: 0\n")

    with pytest.raises(ConfigValueError, match="'steps': -2") as info:
        load_config(["profile=rtx3080", "steps=-2"], config_file=mine)

    assert "set in" not in str(info.value)


def test_a_missing_config_file_is_the_same_error_as_in_the_cli(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="not found"):
        load_config(config_file=tmp_path / "nope.yaml")


def test_an_empty_config_file_gives_the_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")

    cfg = load_config(["profile=rtx3080"], config_file=empty)

    assert cfg.lipsync.name == primary_choice("lipsync")


# ---------------------------------------------------- wherever it is called from


def test_load_config_composes_what_the_cli_composes(tmp_path: Path) -> None:
    overrides = ["profile=low_vram", "lipsync=musetalk", "steps=30"]
    cli = run_avatar("--cfg", "job", *overrides, cwd=tmp_path)

    assert cli.returncode == 0, cli.stderr
    assert OmegaConf.create(cli.stdout) == OmegaConf.create(
        OmegaConf.to_yaml(load_config(overrides))
    )


def test_load_config_inside_an_initialised_hydra_context_leaves_that_context_working(
    tmp_path: Path,
) -> None:
    (tmp_path / "app.yaml").write_text("greeting: hello\n")

    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        cfg = load_config(["profile=rtx3080", "lipsync=wav2lip"])
        assert GlobalHydra.instance().is_initialized()
        assert compose(config_name="app").greeting == "hello"

    assert cfg.lipsync.name == "wav2lip"


APP = """
import json, sys
import hydra
from hydra.core.hydra_config import HydraConfig
from avatar import load_config
from avatar.config.compose import register_config
from avatar.config.files import builtin_conf_dir
from avatar.config.profiles import AutoProfile

register_config(AutoProfile([builtin_conf_dir()]))

@hydra.main(version_base="1.3", config_path=str(builtin_conf_dir()), config_name="config")
def app(cfg):
    inner = load_config(["profile=low_vram"])
    print(json.dumps({"job": cfg.steps, "outer": [cfg.profile.name, cfg.lipsync.name],
                      "inner": [inner.profile.name, inner.lipsync.name]}))

app()
"""


def test_load_config_inside_a_running_hydra_main_sweep_leaves_the_apps_jobs_alone(
    tmp_path: Path,
) -> None:
    """Each job calls load_config(profile=low_vram); the app's own jobs keep the auto choice."""
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    proc = subprocess.run(
        [sys.executable, "app.py", "-m", "steps=1,2", "hydra.callbacks={}"],
        cwd=tmp_path,
        env=fake_nvml_env([RTX_3080]),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    jobs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [job["job"] for job in jobs] == [1, 2]
    for job in jobs:
        assert job["outer"] == ["rtx3080", primary_choice("lipsync")]
        assert job["inner"] == ["low_vram", profile_choice("low_vram", "lipsync")]
    assert str(REPO_ROOT) in fake_nvml_env([])["PYTHONPATH"]  # the app imports this tree


# ------------------------------------------------------------- through the CLI


def sweep_choices(sweep_dir: Path, *groups: str) -> list[tuple[str, ...]]:
    """Each sweep job's profile and stage options, from the config Hydra saved for it."""
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [
        tuple(
            str(OmegaConf.select(cfg, f"{g}.name"))
            for g in ("profile", *groups)
            for cfg in [OmegaConf.load(job / ".hydra" / "config.yaml")]
        )
        for job in jobs
    ]


def test_a_sweep_over_profiles_gives_each_job_its_profiles_stage_options(tmp_path: Path) -> None:
    result = run_avatar(
        "-m", "profile=auto,rtx3080,cpu", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path, gpus=[GTX_1650],
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert sweep_choices(tmp_path / "sweep", "voice", "lipsync") == [
        ("low_vram", primary_choice("voice"), profile_choice("low_vram", "lipsync")),
        ("rtx3080", primary_choice("voice"), primary_choice("lipsync")),
        ("cpu", profile_choice("cpu", "voice"), profile_choice("cpu", "lipsync")),
    ]


def test_a_stage_option_swept_on_the_command_line_wins_in_every_job(tmp_path: Path) -> None:
    result = run_avatar(
        "-m", "profile=auto,cpu", "lipsync=sadtalker,musetalk",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, gpus=[GTX_1650],
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    chosen = sweep_choices(tmp_path / "sweep", "lipsync")
    assert sorted(chosen) == sorted(
        (profile, lipsync)
        for profile in ("low_vram", "cpu")
        for lipsync in ("sadtalker", "musetalk")
    )
