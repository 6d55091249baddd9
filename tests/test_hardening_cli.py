"""Issue 10 through the real CLI: input a hostile new user would try gets a working result or
one paragraph with exit status 1; warnings go to stderr and the status alone to stdout; a
bug in avatar is an internal error with exit status 2.

Each bad input asserts what the user sees: exit status 1, no traceback, one paragraph that
names the problem, no status, and nothing in the working directory written or changed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_helpers import (
    CPU_MODE_WARNING,
    MINE_YAML_HEAD,
    run_avatar,
    status_profile,
    status_settings,
    tree_snapshot,
    write_user_config,
)
from fakes import FakeGPU

from avatar.config.files import builtin_conf_dir

pytestmark = pytest.mark.slow

RTX_3080 = FakeGPU("NVIDIA GeForce RTX 3080", total_mib=10240, used_mib=300)
BUILTIN_PROFILES = builtin_conf_dir() / "profile"
HUGE = "9" * 400
USER = ("--config-dir", "myconf", "--config-name", "mine")


def assert_one_paragraph_error(
    tmp_path: Path, args: tuple[str, ...], *needles: str, gpus=None, env=None
) -> str:
    before = tree_snapshot(tmp_path)

    result = run_avatar(*args, cwd=tmp_path, gpus=gpus, env=env)

    message = result.error_message()
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output, result.output
    assert message.startswith("Error: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in:\n{message}"
    assert "Settings" not in result.stdout
    assert tree_snapshot(tmp_path) == before
    return message


# ------------------------------------------------------------------ 1: interpolations


@pytest.mark.parametrize(
    "override", ["steps=${oc.env:HOME}", "steps=${oc.env:AVATAR_NO_SUCH_VAR}", "steps=${nosuch}"]
)
def test_an_interpolation_that_fails_is_one_paragraph(tmp_path: Path, override: str) -> None:
    assert_one_paragraph_error(tmp_path, (override,), "Cannot resolve 'steps'")


# ------------------------------------------------------------------ 3: ranges


@pytest.mark.parametrize(
    "args",
    [
        (f"batch_size={HUGE}",),
        (f"safety_margin_mib={HUGE}",),
        (f"lipsync.batch_size={HUGE}",),
        ("voice=xtts_v2", f"voice.temperature={HUGE}"),
        ("-m", f"steps=1,{HUGE}"),
    ],
    ids=["batch_size", "safety_margin_mib", "stage_knob", "float_knob", "in_a_sweep"],
)
def test_a_400_digit_number_is_refused_with_its_range(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    key = args[-1].split("=")[0]
    message = assert_one_paragraph_error(tmp_path, args, f"'{key}'", "at most")
    assert "(400 digits)" in message


def test_a_huge_number_in_a_user_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    write_user_config(tmp_path, "myconf/mine.yaml", MINE_YAML_HEAD + f"steps: {HUGE}\n")

    assert_one_paragraph_error(tmp_path, USER, "'steps'", "at most 10000")


# ------------------------------------------------------------------ 5: silently wrong answers


def test_a_misspelt_key_added_with_plus_suggests_the_right_one(tmp_path: Path) -> None:
    assert_one_paragraph_error(tmp_path, ("+Steps=30",), "'Steps'", "'steps'")


def _profile_text(builtin: str, **values: object) -> str:
    text = (BUILTIN_PROFILES / f"{builtin}.yaml").read_text(encoding="utf-8")
    for key, value in values.items():
        text = re.sub(rf"(?m)^{key}: .*$", f"{key}: {value}", text)
    return text


def test_a_user_profile_that_shadows_a_built_in_one_wins_with_a_notice(tmp_path: Path) -> None:
    write_user_config(tmp_path, "myconf/profile/rtx3080.yaml", _profile_text("rtx3080", steps=77))

    result = run_avatar("--config-dir", "myconf", "profile=rtx3080", cwd=tmp_path)

    assert result.returncode == 0, result.output
    assert status_settings(result.stdout)["steps"] == "77"
    notices = [line for line in result.stderr.splitlines() if "built-in profile" in line]
    assert len(notices) == 1 and "rtx3080" in notices[0], result.stderr


def test_a_user_profile_that_shadows_a_built_in_one_is_what_auto_picks(tmp_path: Path) -> None:
    write_user_config(tmp_path, "myconf/profile/rtx3080.yaml", _profile_text("rtx3080", steps=77))

    result = run_avatar("--config-dir", "myconf", cwd=tmp_path, gpus=[RTX_3080])

    assert result.returncode == 0, result.output
    assert status_profile(result.stdout)[0] == "rtx3080"
    assert status_settings(result.stdout)["steps"] == "77"


def test_a_user_config_yaml_is_refused_with_the_reason(tmp_path: Path) -> None:
    write_user_config(tmp_path, "myconf/config.yaml", MINE_YAML_HEAD + "steps: 3\n")

    assert_one_paragraph_error(
        tmp_path, ("--config-dir", "myconf"), "config.yaml", "primary config", "Rename"
    )


def test_two_profiles_with_the_same_threshold_are_an_error_naming_both(tmp_path: Path) -> None:
    write_user_config(
        tmp_path, "myconf/profile/twin.yaml", _profile_text("rtx3080", name="twin", steps=12)
    )

    message = assert_one_paragraph_error(
        tmp_path, ("--config-dir", "myconf"), "twin.yaml", "rtx3080.yaml", gpus=[RTX_3080]
    )
    assert "vram_min_mib" in message


def test_gpu_index_without_a_gpu_is_a_warning_on_stderr(tmp_path: Path) -> None:
    result = run_avatar("gpu_index=7", cwd=tmp_path)

    assert result.returncode == 0, result.output
    assert "gpu_index=7" in result.stderr
    assert "gpu_index=7" not in result.stdout.replace("gpu_index      7", "")


def test_gpu_index_naming_no_visible_gpu_is_an_error_when_a_gpu_is_there(tmp_path: Path) -> None:
    assert_one_paragraph_error(tmp_path, ("gpu_index=7",), "gpu_index=7", gpus=[RTX_3080])


# ------------------------------------------------------------------ 2: unreadable user files


@pytest.mark.parametrize(
    ("files", "needles"),
    [
        ({"myconf/mine.yaml": MINE_YAML_HEAD.encode() + b"steps: 3\n# caf\xe9\n"}, ("line 5",)),
        ({"myconf/mine.yaml": MINE_YAML_HEAD.encode() + b"steps: 3\nsteps: 4\n"}, ("twice",)),
        ({"myconf/mine.yaml": b"defaults:\n  - config\n  - mine\n"}, ("itself",)),
    ],
    ids=["not_utf8", "duplicate_key", "includes_itself"],
)
def test_a_user_file_avatar_cannot_read_names_the_file(
    tmp_path: Path, files: dict[str, bytes], needles: tuple[str, ...]
) -> None:
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)

    assert_one_paragraph_error(tmp_path, USER, "mine.yaml", *needles)


def test_a_profile_with_missing_fields_names_the_file_and_the_fields(tmp_path: Path) -> None:
    write_user_config(
        tmp_path, "myconf/profile/half.yaml", "name: half\naccelerator: gpu\nvram_min_mib: 30000\n"
    )

    assert_one_paragraph_error(
        tmp_path, ("--config-dir", "myconf"), "half.yaml", "batch_size", "steps"
    )


def test_a_profile_called_auto_is_reserved(tmp_path: Path) -> None:
    write_user_config(tmp_path, "myconf/profile/auto.yaml", _profile_text("rtx4090", name="auto"))

    assert_one_paragraph_error(tmp_path, ("--config-dir", "myconf"), "`auto` is reserved")


# ------------------------------------------------------------------ 8: streams and messages


def test_warnings_go_to_stderr_and_stdout_holds_only_the_status(tmp_path: Path) -> None:
    result = run_avatar("profile=low_vram", cwd=tmp_path)

    assert result.returncode == 0, result.output
    assert CPU_MODE_WARNING in result.stderr
    assert CPU_MODE_WARNING not in result.stdout
    assert result.stdout.startswith("avatar ")


def test_a_library_warning_is_one_line_without_the_code_that_raised_it(tmp_path: Path) -> None:
    """Hydra warns (a Python UserWarning) about a user file without `_self_`; the user sees
    the message as one line like avatar's own, not Hydra's file, line and source text,
    unless HYDRA_FULL_ERROR=1 asks for a developer's view."""
    write_user_config(tmp_path, "myconf/mine.yaml", "defaults:\n  - config\nsteps: 7\n")

    result = run_avatar(*USER, cwd=tmp_path)
    full = run_avatar(*USER, cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})

    assert result.returncode == 0, result.output
    assert status_settings(result.stdout)["steps"] == "7"  # the file's value wins
    lines = [line for line in result.stderr.splitlines() if "_self_" in line]
    assert lines == [line for line in lines if line.startswith("In 'mine':")] and len(lines) == 1
    assert "defaults_list.py" not in result.stderr and "UserWarning" not in result.stderr
    assert "UserWarning" in full.stderr and "warnings.warn" in full.stderr


def test_hydra_full_error_shows_the_traceback_of_a_user_error(tmp_path: Path) -> None:
    result = run_avatar("steps=0", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})

    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "Error: Invalid value for 'steps'" in result.stderr


def test_a_bogus_avatar_profile_does_not_break_help(tmp_path: Path) -> None:
    result = run_avatar("--help", cwd=tmp_path, env={"AVATAR_PROFILE": "nope"})

    assert result.returncode == 0, result.output
    assert "Usage: avatar" in result.stdout
    assert "AVATAR_PROFILE='nope'" in result.stderr


def test_a_bogus_avatar_profile_is_an_error_wherever_the_profile_is_chosen(
    tmp_path: Path,
) -> None:
    assert_one_paragraph_error(
        tmp_path, ("profile=rtx3080",), "AVATAR_PROFILE='nope'", env={"AVATAR_PROFILE": "nope"}
    )


def test_config_dir_naming_a_file_says_it_is_a_file(tmp_path: Path) -> None:
    write_user_config(tmp_path, "mine.yaml", MINE_YAML_HEAD)

    assert_one_paragraph_error(tmp_path, ("--config-dir", "mine.yaml"), "is a file, not a folder")


def test_a_sweep_point_that_does_not_resolve_fails_alone(tmp_path: Path) -> None:
    result = run_avatar("-m", "steps=${nosuch},5", "hydra.sweep.dir=sweep", cwd=tmp_path)

    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    assert "Cannot resolve 'steps'" in result.stderr
    assert "1 of 2 sweep jobs failed (job 0)" in result.stderr
    assert "stopped" not in result.output
    assert (tmp_path / "sweep" / "1" / "status.json").is_file()


def test_a_config_group_given_a_number_or_null_is_one_paragraph(tmp_path: Path) -> None:
    for args in (("voice=0",), ("lipsync=null",), ("=3",)):
        assert_one_paragraph_error(tmp_path, args, args[0])


def test_a_huge_number_for_a_float_knob_in_a_user_file_names_the_file(tmp_path: Path) -> None:
    text = MINE_YAML_HEAD.replace("  - _self_", "  - override voice: xtts_v2\n  - _self_")
    write_user_config(tmp_path, "myconf/mine.yaml", text + f"voice:\n  temperature: {HUGE}\n")

    assert_one_paragraph_error(tmp_path, USER, "mine.yaml", "(400 digits)")
