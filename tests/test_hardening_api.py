"""Issue 10 through the public API: what the CLI refuses, `load_config()` refuses too, as one
paragraph (an AvatarUserError), never an OmegaConf, Hydra or Python error.

The classes: interpolations that fail at validation (1), user files avatar cannot read
(2), numbers beyond their range (3), silently wrong answers (5) and the API's own
arguments (7). The ranges come from the schema's field metadata, the one place they live.
"""

from __future__ import annotations

import logging
import re
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
from fakes import FakeGPU

from avatar import load_config
from avatar.config.files import builtin_conf_dir
from avatar.config.schema import (
    STAGE_SCHEMAS,
    AvatarConfig,
    range_rules,
    stage_base,
)
from avatar.errors import AvatarUserError, ConfigFileError, ConfigValueError, ProfileError

BUILTIN_PROFILES = builtin_conf_dir() / "profile"
RTX_3080 = FakeGPU("NVIDIA GeForce RTX 3080", total_mib=10240, used_mib=300)
HUGE = "9" * 400


def one_paragraph(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n\n" not in text and "Traceback" not in text, text
    return text


# --------------------------------------------------------------- 1: interpolations


@pytest.mark.parametrize(
    "override",
    ["steps=${oc.env:HOME}", "steps=${oc.env:AVATAR_TEST_NO_SUCH_VARIABLE}", "steps=${nosuch}"],
)
def test_an_interpolation_that_fails_is_one_paragraph_naming_the_key(override: str) -> None:
    with pytest.raises(ConfigValueError) as caught:
        load_config([override])

    message = one_paragraph(caught.value)
    assert "Cannot resolve 'steps'" in message
    assert caught.value.key == "steps"


def test_an_interpolation_of_a_good_key_still_works() -> None:
    cfg = load_config(["profile=rtx3080", "batch_size=${profile.steps}"])

    assert cfg.batch_size == cfg.profile.steps


# --------------------------------------------------------------- 3: ranges from the schema


def _option_using(stage: str, schema_name: str) -> str:
    """The stage option whose file is typed by `schema_name` (its defaults name it)."""
    for path in sorted((builtin_conf_dir() / stage).glob("*.yaml")):
        if f"/{schema_name}@_here_" in path.read_text(encoding="utf-8"):
            return path.stem
    raise AssertionError(f"no conf/{stage}/*.yaml uses {schema_name}")


def _ranged_overrides() -> list[tuple[list[str], str, float, float]]:
    """(the stage option it needs, key, lowest, highest) for every ranged key."""
    declared_by: dict[str, str] = {}
    for name, schema in STAGE_SCHEMAS.items():
        stage, base = stage_base(schema)
        for spec in fields(schema):
            if spec.name not in {f.name for f in fields(base)}:
                declared_by[f"{stage.value}.{spec.name}"] = (
                    f"{stage.value}={_option_using(stage.value, name)}"
                )
    cases = []
    for key, (low, high) in range_rules().items():
        owner = next(
            (o for k, o in declared_by.items() if key == k or key.startswith(k + ".")), None
        )
        cases.append(([owner] if owner else [], key, low, high))
    return cases


RANGED = _ranged_overrides()


def _all_schemas() -> list[type]:
    found: list[type] = []
    stack: list[type] = [AvatarConfig, *STAGE_SCHEMAS.values()]
    while stack:
        schema = stack.pop()
        if schema in found:
            continue
        found.append(schema)
        for spec in fields(schema):
            if isinstance(spec.default_factory, type) and is_dataclass(spec.default_factory):
                stack.append(spec.default_factory)
    return found


def test_every_number_in_the_schema_has_a_range() -> None:
    """No int or float field of any schema is left without both bounds."""
    unranged = [
        f"{schema.__name__}.{spec.name}"
        for schema in _all_schemas()
        for spec in fields(schema)
        if str(spec.type).startswith(("int", "float")) and set(spec.metadata) < {"min", "max"}
    ]
    assert unranged == []
    assert len(RANGED) > 40  # the stages' knobs are in the table too


@pytest.mark.parametrize(
    ("options", "key", "low", "high"), RANGED, ids=[c[1] + "/" + (c[0] or ["-"])[0] for c in RANGED]
)
def test_a_number_past_either_end_of_its_range_names_the_key_and_the_range(
    options: list[str], key: str, low: float, high: float
) -> None:
    integer = isinstance(low, int) and isinstance(high, int)
    for value in (high + 1 if integer else high * 2 + 1, HUGE):
        with pytest.raises(ConfigValueError) as caught:
            load_config(["profile=rtx3080", *options, f"{key}={value}"])
        message = one_paragraph(caught.value)
        assert key in message and str(high) in message, message


def test_a_float_knob_refuses_nan_and_infinity() -> None:
    for value in ("nan", "inf", "-inf"):
        with pytest.raises(ConfigValueError, match=r"voice\.temperature"):
            load_config(["voice=xtts_v2", f"voice.temperature={value}"])


def test_the_top_of_a_range_is_accepted() -> None:
    cfg = load_config(["profile=rtx3080", "steps=10000", "safety_margin_mib=0"])

    assert (cfg.steps, cfg.safety_margin_mib) == (10000, 0)


# --------------------------------------------------------------- 5: silently wrong answers


def test_a_misspelt_key_added_with_plus_suggests_the_known_key() -> None:
    with pytest.raises(ConfigValueError) as caught:
        load_config(["+Steps=30"])

    assert "'Steps'" in one_paragraph(caught.value) and "'steps'" in str(caught.value)


def test_an_unknown_profile_key_added_with_plus_is_refused() -> None:
    with pytest.raises(ConfigValueError, match=r"profile\.extra"):
        load_config(["+profile.extra=1"])


def _user_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "myconf"
    for name, text in {"mine.yaml": "defaults:\n  - config\n  - _self_\n", **files}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder / "mine.yaml"


def test_a_user_profile_with_a_built_in_name_wins_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = (BUILTIN_PROFILES / "rtx3080.yaml").read_text(encoding="utf-8")
    mine = _user_dir(
        tmp_path, {"profile/rtx3080.yaml": re.sub(r"(?m)^steps: .*$", "steps: 77", text)}
    )

    with caplog.at_level(logging.WARNING):
        cfg = load_config(["profile=rtx3080"], config_file=mine)

    assert cfg.profile.steps == 77
    notices = [
        r.getMessage() for r in caplog.records if "replaces avatar's built-in" in r.getMessage()
    ]
    assert len(notices) == 1 and "rtx3080" in notices[0]


def test_a_user_file_named_config_yaml_is_refused_with_the_reason(tmp_path: Path) -> None:
    mine = _user_dir(tmp_path, {"config.yaml": "steps: 3\n"})

    with pytest.raises(ConfigFileError, match=r"config\.yaml") as caught:
        load_config(config_file=mine)

    assert "primary config" in one_paragraph(caught.value)


def test_two_gpu_profiles_with_one_threshold_are_an_error_naming_both(
    tmp_path: Path, fake_nvml
) -> None:
    fake_nvml([RTX_3080])
    text = (BUILTIN_PROFILES / "rtx3080.yaml").read_text(encoding="utf-8")
    mine = _user_dir(tmp_path, {"profile/twin.yaml": text.replace("name: rtx3080", "name: twin")})

    with pytest.raises(ProfileError) as caught:
        load_config(config_file=mine)

    message = one_paragraph(caught.value)
    assert "twin.yaml" in message and "rtx3080.yaml" in message and "vram_min_mib" in message


def test_gpu_index_without_a_gpu_is_a_warning_not_silence(
    caplog: pytest.LogCaptureFixture, fake_nvml
) -> None:
    fake_nvml([])
    with caplog.at_level(logging.WARNING):
        cfg = load_config(["gpu_index=7"])

    assert cfg.gpu_index == 7
    assert any("gpu_index=7" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------- 7: the API's own arguments


def test_deleting_a_needed_key_is_refused_as_on_the_command_line() -> None:
    with pytest.raises(ConfigValueError, match="deletes 'steps'"):
        load_config(["~steps"])


def test_deleting_the_profile_is_one_paragraph() -> None:
    with pytest.raises(AvatarUserError) as caught:
        load_config(["~profile"])

    assert "profile" in one_paragraph(caught.value)


def test_a_string_instead_of_a_list_says_to_pass_a_list() -> None:
    with pytest.raises(TypeError, match=r"list.*\['steps=30'\]"):
        load_config("steps=30")  # type: ignore[arg-type]


# --------------------------------------------------------------- 2: files avatar cannot read


@pytest.mark.parametrize(
    ("files", "names"),
    [
        (
            {"mine.yaml": b"defaults:\n  - config\n  - _self_\nsteps: 3\n# caf\xe9\n"},
            ("UTF-8", "line 5"),
        ),
        (
            {"mine.yaml": b"defaults:\n  - config\n  - _self_\nsteps: 3\nsteps: 4\n"},
            ("twice", "line 5"),
        ),
        ({"mine.yaml": b"defaults:\n  - config\n  - mine\n  - _self_\n"}, ("itself", "mine")),
        (
            {
                "mine.yaml": b"defaults:\n  - config\n  - other\n  - _self_\n",
                "other.yaml": b"defaults:\n  - mine\n",
            },
            ("other.yaml", "itself"),
        ),
    ],
    ids=["not_utf8", "duplicate_key", "includes_itself", "includes_itself_through_another"],
)
def test_a_user_file_avatar_cannot_read_is_one_paragraph_naming_it(
    tmp_path: Path, files: dict[str, bytes], names: tuple[str, ...]
) -> None:
    folder = tmp_path / "myconf"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)

    with pytest.raises(ConfigFileError) as caught:
        load_config(config_file=folder / "mine.yaml")

    message = one_paragraph(caught.value)
    assert str(folder) in message
    for name in names:
        assert name in message, message


@pytest.mark.parametrize(
    ("profile", "names"),
    [
        (
            "name: half\naccelerator: gpu\nvram_min_mib: 30000\n",
            ("half.yaml", "precision", "steps"),
        ),
        (
            "name: bad\naccelerator: gpu\nvram_min_mib: 30000\nsteps: 1\nsteps: 2\n",
            ("bad.yaml", "twice"),
        ),
        (b"name: bad\naccelerator: gpu\nvram_min_mib: 3\xff\n", ("bad.yaml", "UTF-8")),
        (
            (BUILTIN_PROFILES / "rtx4090.yaml")
            .read_text(encoding="utf-8")
            .replace("rtx4090", "big")
            .replace("20480", HUGE),
            ("big.yaml", "vram_min_mib"),
        ),
    ],
    ids=["missing_fields", "duplicate_key", "not_utf8", "huge_threshold"],
)
def test_a_user_profile_avatar_cannot_read_is_one_paragraph_naming_it(
    tmp_path: Path, profile: str | bytes, names: tuple[str, ...]
) -> None:
    mine = _user_dir(tmp_path, {})
    name = names[0]
    path = mine.parent / "profile" / name
    path.parent.mkdir(parents=True)
    if isinstance(profile, bytes):
        path.write_bytes(profile)
    else:
        path.write_text(profile, encoding="utf-8")

    with pytest.raises(AvatarUserError) as caught:
        load_config(config_file=mine)

    message = one_paragraph(caught.value)
    for part in names:
        assert part in message, message


def test_a_user_profile_named_auto_is_reserved(tmp_path: Path) -> None:
    text = (BUILTIN_PROFILES / "rtx4090.yaml").read_text(encoding="utf-8")
    mine = _user_dir(tmp_path, {"profile/auto.yaml": text.replace("rtx4090", "auto")})

    with pytest.raises(ProfileError, match="the name `auto` is reserved"):
        load_config(config_file=mine)


def test_a_value_beyond_ascii_gets_quoting_advice_and_quoted_it_works() -> None:
    with pytest.raises(ConfigValueError, match=r"""'profile\.description="café"'"""):
        load_config(["profile.description=café"])

    assert load_config(['profile.description="café"']).profile.description == "café"
