"""A user's config folder: mistakes Hydra only meets while composing (a defaults list that
includes its own file through config groups, a number past any float in a stage option's
float field) are one paragraph naming the file, through `load_config()` and the CLI, and a
sweep point that meets one fails alone; a RecursionError or OverflowError the folder does
not explain stays a bug."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import run_avatar, tree_snapshot

from avatar import load_config
from avatar.config.files import builtin_conf_dir
from avatar.config.user_dir import (
    Include,
    defaults_includes,
    explain_failure,
    failures_explained,
    find_defaults_cycle,
)
from avatar.errors import ConfigFileError

HUGE = "1" + "0" * 400
MINE = "defaults:\n  - config\n  - override lipsync: {option}\n  - _self_\n"
OPTION_HEAD = "defaults:\n  - /musetalk_schema@_here_\n{extra}  - _self_\n"


def _stage_option(name: str, *, extra_defaults: str = "", fixed_share: str = "0.6") -> str:
    """A user's own lipsync option, a copy of musetalk's values under another name."""
    body = (builtin_conf_dir() / "lipsync" / "musetalk.yaml").read_text(encoding="utf-8")
    body = body.split("_self_\n", 1)[1].replace("name: musetalk", f"name: {name}")
    body = body.replace("fixed_share: 0.6", f"fixed_share: {fixed_share}")
    return OPTION_HEAD.format(extra=extra_defaults) + body


def _folder(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "myconf"
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


# ----------------------------------------------------------------- resolving defaults


@pytest.mark.parametrize(
    ("config_path", "entry", "target"),
    [
        ("mine", "other", "other"),
        ("lipsync/x", "y", "lipsync/y"),
        ("lipsync/x", "/y", "y"),
        ("lipsync/x", "y@_here_", "lipsync/y"),
        ("lipsync/x", {"sub": "y"}, "lipsync/sub/y"),
        ("lipsync/x", {"/lipsync": "y"}, "lipsync/y"),
        ("mine", {"override lipsync": "z"}, "lipsync/z"),
        ("mine", {"optional lipsync@lip": "z"}, "lipsync/z"),
    ],
)
def test_a_defaults_entry_names_the_config_hydra_reads(
    config_path: str, entry: object, target: str
) -> None:
    assert [i.target for i in defaults_includes(config_path, {"defaults": [entry]})] == [target]


def test_entries_that_include_no_file_are_left_out() -> None:
    data = {"defaults": ["_self_", {"lipsync": "???"}, {"lipsync": None}, {"x": "${oc.env:A}"}]}
    assert defaults_includes("mine", data) == []
    assert defaults_includes("mine", {"defaults": [{"g": ["a", "b"]}]}) == [
        Include("g: a", "g/a"),
        Include("g: b", "g/b"),
    ]


def test_a_cycle_through_a_config_group_is_found_and_a_chain_is_not(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "mine.yaml": MINE.format(option="w"),
            "lipsync/w.yaml": "defaults:\n  - v\n",
            "lipsync/v.yaml": "defaults:\n  - /mine\n",
            "chain.yaml": "defaults:\n  - lipsync/v2\n",
            "lipsync/v2.yaml": "a: 1\n",
        },
    )

    found = find_defaults_cycle(["mine"], [folder])

    assert found is not None
    assert "mine.yaml -> lipsync/w.yaml -> lipsync/v.yaml -> mine.yaml" in str(found)
    assert str(folder / "lipsync" / "v.yaml") in str(found)
    assert find_defaults_cycle(["chain"], [folder]) is None


# ----------------------------------------------------------------- through load_config()


def test_a_stage_option_that_includes_itself_is_one_paragraph_naming_it(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "mine.yaml": MINE.format(option="z"),
            "lipsync/z.yaml": _stage_option("z", extra_defaults="  - z\n"),
        },
    )

    with pytest.raises(ConfigFileError) as caught:
        load_config(config_file=folder / "mine.yaml")

    message = str(caught.value)
    assert "\n" not in message
    assert str(folder / "lipsync" / "z.yaml") in message and "itself" in message
    assert "lipsync/z.yaml -> lipsync/z.yaml" in message


def test_a_huge_number_in_a_stage_option_names_the_file_key_and_range(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "mine.yaml": MINE.format(option="x"),
            "lipsync/x.yaml": _stage_option("x", fixed_share=HUGE),
        },
    )

    with pytest.raises(ConfigFileError) as caught:
        load_config(config_file=folder / "mine.yaml")

    message = str(caught.value)
    assert str(folder / "lipsync" / "x.yaml") in message
    assert "lipsync.vram_growth.fixed_share" in message and "at most 1.0" in message
    assert "401 digits" in message


def test_a_good_stage_option_beside_broken_unread_files_still_composes(tmp_path: Path) -> None:
    """Only a failure sends avatar searching the folder: files the command does not read
    (an unfinished option, a non-UTF-8 scratch file) cost nothing and stop nothing."""
    folder = _folder(
        tmp_path,
        {
            "mine.yaml": MINE.format(option="x"),
            "lipsync/x.yaml": _stage_option("x", fixed_share="0.5"),
            "lipsync/unfinished.yaml": _stage_option("u", extra_defaults="  - unfinished\n"),
        },
    )
    (folder / "scratch.yaml").write_bytes(b"a: caf\xe9\n")

    cfg = load_config(config_file=folder / "mine.yaml")

    assert cfg.lipsync.name == "x" and cfg.lipsync.vram_growth.fixed_share == 0.5


@pytest.mark.parametrize("error", [RecursionError("deep"), OverflowError("big")])
def test_a_failure_the_folder_does_not_explain_stays_a_bug(
    tmp_path: Path, error: Exception
) -> None:
    folder = _folder(tmp_path, {"mine.yaml": MINE.format(option="x")})

    assert explain_failure(error, [folder, builtin_conf_dir()]) is None
    with pytest.raises(type(error)), failures_explained([folder, builtin_conf_dir()]):
        raise error
    with pytest.raises(ValueError), failures_explained([folder]):
        raise ValueError("not a composition failure avatar explains")


# ------------------------------------------------------------------------ through the CLI


@pytest.mark.slow
@pytest.mark.parametrize(
    ("option", "text", "needles"),
    [
        ("z", _stage_option("z", extra_defaults="  - z\n"), ("z.yaml", "itself")),
        ("x", _stage_option("x", fixed_share=HUGE), ("x.yaml", "fixed_share", "at most 1.0")),
    ],
    ids=["includes_itself", "huge_number"],
)
def test_the_cli_names_the_stage_option_file(
    tmp_path: Path, option: str, text: str, needles: tuple[str, ...]
) -> None:
    _folder(tmp_path, {f"lipsync/{option}.yaml": text})
    before = tree_snapshot(tmp_path)

    result = run_avatar("--config-dir", "myconf", f"lipsync={option}", cwd=tmp_path)

    message = result.error_message()
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output and "Internal error" not in result.output
    assert message.startswith("Error: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    assert tree_snapshot(tmp_path) == before


@pytest.mark.slow
def test_in_a_sweep_such_a_point_fails_alone(tmp_path: Path) -> None:
    _folder(
        tmp_path,
        {
            "lipsync/z.yaml": _stage_option("z", extra_defaults="  - z\n"),
            "lipsync/x.yaml": _stage_option("x", fixed_share=HUGE),
        },
    )

    result = run_avatar(
        "--config-dir", "myconf", "-m", "lipsync=wav2lip,x,z", "hydra.sweep.dir=sw", cwd=tmp_path
    )

    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output and "Internal error" not in result.output
    assert "3 jobs, 1 ok, 2 failed" in result.stdout
    assert "x.yaml" in result.stderr and "z.yaml" in result.stderr
    assert (tmp_path / "sw" / "0" / "status.json").is_file()
