"""Bad input through the real CLI: keys, values, types, ranges, files, environment variables.

Each case asserts what a user sees: exit status 1; one paragraph that names the
problem (the key, value or file); no traceback; no status printed; and no file in
the working directory written, changed or deleted (a snapshot before and after).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cli_helpers import (
    MINE_YAML_HEAD,
    run_avatar,
    status_settings,
    tree_snapshot,
    write_user_config,
)
from fakes import FakeGPU
from omegaconf import OmegaConf

from avatar.config.files import builtin_conf_dir

pytestmark = pytest.mark.slow

RTX_3080 = FakeGPU("NVIDIA GeForce RTX 3080", total_mib=10240, used_mib=300)
GOOD_PROFILE = (builtin_conf_dir() / "profile" / "rtx4090.yaml").read_text(encoding="utf-8")


@dataclass(frozen=True)
class BadInput:
    id: str
    args: tuple[str, ...]
    must_name: tuple[str, ...]  # substrings the message must contain
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # path under the cwd -> text
    gpus: tuple[FakeGPU, ...] | None = None


def user_file(text: str) -> dict[str, str]:
    return {"myconf/mine.yaml": text}


USER = ("--config-dir", "myconf", "--config-name", "mine")

CASES = [
    # values and types on the command line
    BadInput("steps_not_a_number", ("steps=abc",), ("steps", "'abc'", "Integer")),
    BadInput("steps_a_float", ("steps=1.5",), ("steps", "1.5")),
    BadInput("steps_null", ("steps=null",), ("steps", "not Optional")),
    BadInput("precision_int8", ("precision=int8",), ("int8", "fp32, fp16, bf16")),
    BadInput("quality_ultra", ("quality=ultra",), ("ultra", "reduced, medium, high")),
    BadInput("verbose_maybe", ("verbose=maybe",), ("verbose", "'maybe'", "bool")),
    BadInput("unknown_key", ("nosuchkey=1",), ("nosuchkey", "not in")),
    BadInput("unknown_profile", ("profile=nope",), ("profile='nope'", "rtx3080", "low_vram")),
    BadInput("unknown_profile_in_a_sweep", ("-m", "profile=rtx3080,nope"), ("'nope'", "cpu")),
    # ranges OmegaConf does not check
    BadInput("steps_zero", ("steps=0",), ("'steps'", "0", "at least 1")),
    BadInput("batch_size_zero", ("batch_size=0",), ("'batch_size'", "0", "at least 1")),
    BadInput("margin_negative", ("safety_margin_mib=-1",), ("'safety_margin_mib'", "-1")),
    BadInput("gpu_index_negative", ("gpu_index=-1",), ("'gpu_index'", "-1", "at least 0")),
    BadInput("profile_steps_zero", ("profile.steps=0",), ("'profile.steps'", "0")),
    BadInput(
        "gpu_index_names_no_visible_gpu",
        ("gpu_index=3",),
        ("gpu_index=3", "visible GPUs are 0"),
        gpus=(RTX_3080,),
    ),
    # malformed overrides
    BadInput("override_without_value", ("steps",), ("'steps'", "KEY=VALUE")),
    BadInput("override_unclosed_list", ("steps=[1,",), ("'steps=[1,'", "KEY=VALUE")),
    BadInput("override_deletes_a_needed_key", ("~steps",), ("'~steps'", "deletes")),
    # environment variables
    BadInput(
        "avatar_profile_unknown",
        (),
        ("AVATAR_PROFILE='nope'", "rtx3080"),
        {"AVATAR_PROFILE": "nope"},
    ),
    # files and folders
    BadInput(
        "config_name_missing",
        USER,
        ("mine.yaml", "not found"),
        files={"myconf/other.yaml": MINE_YAML_HEAD},
    ),
    BadInput("config_dir_missing", ("--config-dir", "nodir"), ("nodir", "not found")),
    BadInput(
        "config_path_replaces_avatars_configs",
        ("--config-path", "myconf", "--config-name", "mine"),
        ("--config-path", "--config-dir"),
        files=user_file(MINE_YAML_HEAD),
    ),
    BadInput(
        "invalid_yaml_names_file_and_line",
        USER,
        ("mine.yaml", "line 5"),
        files=user_file(MINE_YAML_HEAD + "steps: [1\nquality: high\n"),
    ),
    BadInput(
        "user_file_without_config_in_defaults",
        USER,
        ("mine.yaml", "`config`", "defaults"),
        files=user_file("defaults:\n  - _self_\nsteps: 3\n"),
    ),
    BadInput(
        "user_file_defaults_not_a_list",
        USER,
        ("mine.yaml", "defaults", "list"),
        files=user_file("defaults: config\nsteps: 3\n"),
    ),
    BadInput(
        "user_file_not_a_mapping",
        USER,
        ("mine.yaml", "mapping", "list"),
        files=user_file("- steps\n- 3\n"),
    ),
    BadInput(
        "yml_name_is_not_read_by_hydra",
        ("--config-dir", "myconf", "--config-name", "mine.yml"),
        ("mine.yml", ".yaml"),
        files={"myconf/mine.yml": MINE_YAML_HEAD},
    ),
    BadInput(
        "yml_file_found_instead_of_yaml",
        USER,
        ("mine.yaml", "not found", "mine.yml"),
        files={"myconf/mine.yml": MINE_YAML_HEAD},
    ),
    BadInput(
        "user_file_sets_profile_as_a_value",
        USER,
        ("mine.yaml", "profile: low_vram", "override profile: low_vram"),
        files=user_file(MINE_YAML_HEAD + "profile: low_vram\n"),
    ),
    BadInput(
        "user_file_chooses_profile_without_override",
        USER,
        ("mine.yaml", "override profile: low_vram"),
        files=user_file("defaults:\n  - config\n  - profile: low_vram\n  - _self_\n"),
    ),
    BadInput(
        "user_file_unknown_key",
        USER,
        ("mine", "stepz"),
        files=user_file(MINE_YAML_HEAD + "stepz: 3\n"),
    ),
    # a range error set in a file names the file too
    BadInput(
        "user_file_steps_zero",
        USER,
        ("'steps'", "0", "at least 1", "myconf/mine.yaml"),
        files=user_file(MINE_YAML_HEAD + "steps: 0\n"),
    ),
    BadInput(
        "user_file_stage_knob_out_of_range",
        (*USER, "voice=xtts_v2"),
        ("'voice.top_p'", "7", "from 0.01 to 1.0", "myconf/mine.yaml"),
        files=user_file(MINE_YAML_HEAD + "voice:\n  top_p: 7\n"),
    ),
    BadInput(
        "user_profile_file_steps_zero",
        ("--config-dir", "myconf", "profile=tiny"),
        ("'profile.steps'", "0", "myconf/profile/tiny.yaml"),
        files={
            "myconf/profile/tiny.yaml": GOOD_PROFILE.replace("name: rtx4090", "name: tiny").replace(
                "steps: 50", "steps: 0"
            ),
        },
    ),
    BadInput(
        "user_profile_file_with_a_wrong_type",
        USER,
        ("big.yaml", "vram_min_mib", "lots"),
        files={
            **user_file(MINE_YAML_HEAD),
            "myconf/profile/big.yaml": GOOD_PROFILE.replace("name: rtx4090", "name: big").replace(
                "vram_min_mib: 20480", "vram_min_mib: lots"
            ),
        },
    ),
]


def test_there_are_at_least_twenty_bad_inputs() -> None:
    assert len(CASES) >= 20
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_exits_1_with_one_paragraph_naming_the_problem(
    tmp_path: Path, case: BadInput
) -> None:
    for rel, text in case.files.items():
        write_user_config(tmp_path, rel, text)
    before = tree_snapshot(tmp_path)

    result = run_avatar(*case.args, cwd=tmp_path, gpus=case.gpus, env=case.env)

    message = result.error_message()
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    assert message, result.output
    assert "\n\n" not in message, f"more than one paragraph:\n{message}"
    for needle in case.must_name:
        assert needle in message, f"{needle!r} not in:\n{message}"
    assert "Settings" not in result.stdout  # no status for a run that failed
    assert tree_snapshot(tmp_path) == before


def test_a_profile_file_with_a_wrong_type_is_named_with_its_key(tmp_path: Path) -> None:
    """The profile case above, checked against the file: its key and its value both named."""
    bad = OmegaConf.create(GOOD_PROFILE)
    bad.name, bad.steps = "big", "many"
    write_user_config(tmp_path, "myconf/profile/big.yaml", OmegaConf.to_yaml(bad))

    result = run_avatar("--config-dir", "myconf", cwd=tmp_path)

    assert result.returncode == 1, result.output
    assert "big.yaml" in result.error_message()
    assert "'many'" in result.error_message()


def test_an_empty_user_file_is_not_an_error_it_warns_and_uses_the_defaults(
    tmp_path: Path,
) -> None:
    write_user_config(tmp_path, "myconf/empty.yaml", "")
    before = tree_snapshot(tmp_path)

    result = run_avatar("--config-dir=myconf", "--config-name=empty", cwd=tmp_path)
    defaults = run_avatar(cwd=tmp_path)

    assert result.returncode == 0, result.output
    assert "empty.yaml is empty; using the built-in defaults" in result.stderr
    assert status_settings(result.stdout) == status_settings(defaults.stdout)
    assert tree_snapshot(tmp_path) == before
