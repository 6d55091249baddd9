"""The golden cases: `python -m avatar ARGS` with an environment and files in a fresh cwd.

Every case runs with the fake NVML (tests/fake_pynvml): `gpus=None` is a machine without
an NVIDIA driver (CPU mode), otherwise the fake GPUs are given as AVATAR_FAKE_GPUS. So
the output never depends on the GPUs of the machine. The texts of user files are
written here, not read from the repo, so a move of conf/ cannot change a case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# {CWD} in an argument is replaced by the case's working directory.
SWEEP_DIR_ARG = "hydra.sweep.dir={CWD}/sweep"


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    gpus: tuple[dict[str, Any], ...] | None = None  # None: no NVIDIA driver
    files: dict[str, str] = field(default_factory=dict)  # path under the cwd -> text
    sweep: str | None = None  # the sweep dir (relative to the cwd) whose files to record


RTX_3080 = {"name": "RTX 3080", "total_mib": 10240, "used_mib": 300}
RTX_3080_FULL = {"name": "NVIDIA GeForce RTX 3080", "total_mib": 10240, "used_mib": 300}
RTX_3080_BUSY = {"name": "NVIDIA GeForce RTX 3080", "total_mib": 10240, "used_mib": 7000}
RTX_4090 = {"name": "NVIDIA GeForce RTX 4090", "total_mib": 24564, "used_mib": 1200}
GTX_1650 = {"name": "NVIDIA GeForce GTX 1650", "total_mib": 4096, "used_mib": 900}

MINE_YAML_HEAD = "defaults:\n  - config\n  - _self_\n"
USER = ("--config-dir", "myconf", "--config-name", "mine")

# A complete profile, as conf/profile/rtx4090.yaml held it when the golden files were taken.
PROFILE_4090 = """\
name: {name}
description: 20 GB and more (RTX 4090 24 GB, RTX 3090, A5000)
accelerator: gpu
vram_min_mib: {vram_min_mib}
nominal_vram_mib: 24576
precision: fp16
quality: high
batch_size: 4
steps: {steps}
safety_margin_mib: 1024
"""


def user_file(text: str) -> dict[str, str]:
    return {"myconf/mine.yaml": text}


def profile_file(name: str, steps: object = 50, vram_min_mib: object = 20480) -> dict[str, str]:
    text = PROFILE_4090.format(name=name, steps=steps, vram_min_mib=vram_min_mib)
    return {f"myconf/profile/{name}.yaml": text}


STATUS_CASES = [
    Case("status_cpu", ()),
    Case("status_fake_rtx3080", (), gpus=(RTX_3080,)),
    Case("status_fake_rtx4090", (), gpus=(RTX_4090,)),
    Case("status_fake_gtx1650", (), gpus=(GTX_1650,)),
    Case("status_driver_without_gpu", (), gpus=()),
    Case("profile_low_vram_steps_30", ("profile=low_vram", "steps=30"), gpus=(RTX_3080,)),
    Case("profile_rtx3080_on_cpu_nominal", ("profile=rtx3080",)),
    Case("verbose_true", ("verbose=true",)),
    Case("verbose_true_fake_gpu", ("verbose=true",), gpus=(RTX_3080,)),
    Case("cfg_job", ("--cfg", "job")),
    Case("help", ("--help",)),
    Case("help_fake_gpu", ("--help",), gpus=(RTX_3080,)),
    Case("version", ("--version",)),
    Case("env_avatar_profile_rtx3080", (), env={"AVATAR_PROFILE": "rtx3080"}),
    Case("env_avatar_profile_huge", (), env={"AVATAR_PROFILE": "huge"}),
    Case(
        "env_avatar_profile_loses_to_command_line",
        ("profile=low_vram",),
        env={"AVATAR_PROFILE": "rtx4090"},
        gpus=(RTX_3080,),
    ),
    Case("gpu_index_1_of_two_gpus", ("gpu_index=1",), gpus=(RTX_3080_BUSY, RTX_4090)),
    Case("two_gpus_auto_choice", (), gpus=(RTX_3080_BUSY, RTX_4090)),
    Case(
        "cuda_visible_devices_1", (), env={"CUDA_VISIBLE_DEVICES": "1"}, gpus=(GTX_1650, RTX_4090)
    ),
    Case("stage_lipsync_wav2lip", ("lipsync=wav2lip",), gpus=(RTX_3080,)),
    Case(
        "stage_low_vram_with_musetalk", ("profile=low_vram", "lipsync=musetalk"), gpus=(RTX_3080,)
    ),
    Case(
        "stage_enhance_realesrgan_tile_256",
        ("enhance=realesrgan", "enhance.tile=256"),
        gpus=(RTX_3080,),
    ),
    Case("stage_pipeline_voice_lipsync", ("pipeline.stages=[voice,lipsync]",), gpus=(RTX_3080,)),
    Case("stage_hallo_does_not_fit", ("lipsync=hallo",), gpus=(GTX_1650,)),
    Case("stage_busy_gpu_does_not_fit", ("profile=rtx3080",), gpus=(RTX_3080_BUSY,)),
    Case(
        "user_file_with_profile_and_steps",
        (*USER,),
        gpus=(RTX_3080,),
        files=user_file(
            "defaults:\n  - config\n  - override profile: low_vram\n  - _self_\n"
            "steps: 30\nprofile:\n  safety_margin_mib: 768\n"
        ),
    ),
    Case(
        "user_file_command_line_wins",
        (*USER, "steps=12"),
        files=user_file(MINE_YAML_HEAD + "steps: 30\n"),
    ),
    Case(
        "user_file_empty_warns",
        ("--config-dir=myconf", "--config-name=empty"),
        files={"myconf/empty.yaml": ""},
    ),
    Case(
        "user_profile_in_config_dir",
        ("--config-dir", "myconf", "profile=mine4090"),
        gpus=(RTX_3080,),
        files=profile_file("mine4090"),
    ),
]

MULTIRUN_CASES = [
    Case(
        "multirun_2x2",
        ("-m", "profile=rtx3080,low_vram", "steps=25,40", SWEEP_DIR_ARG),
        gpus=(RTX_3080_BUSY,),
        sweep="sweep",
    ),
    # Hydra's own sweep dir, multirun/DATE/TIME, and a failing point.
    Case("multirun_failing_point", ("-m", "steps=0,25"), gpus=(RTX_3080,), sweep="multirun/*/*"),
]

ERROR_CASES = [
    # values and types on the command line
    Case("error_steps_abc", ("steps=abc",)),
    Case("error_steps_float", ("steps=1.5",)),
    Case("error_steps_null", ("steps=null",)),
    Case("error_precision_int8", ("precision=int8",)),
    Case("error_quality_ultra", ("quality=ultra",)),
    Case("error_verbose_maybe", ("verbose=maybe",)),
    Case("error_unknown_key", ("nosuchkey=1",)),
    Case("error_profile_nope", ("profile=nope",)),
    Case("error_profile_nope_in_a_sweep", ("-m", "profile=rtx3080,nope")),
    # ranges
    Case("error_steps_zero", ("steps=0",)),
    Case("error_steps_negative", ("steps=-3",)),
    Case("error_batch_size_zero", ("batch_size=0",)),
    Case("error_margin_negative", ("safety_margin_mib=-1",)),
    Case("error_gpu_index_negative", ("gpu_index=-1",)),
    Case("error_profile_steps_zero", ("profile.steps=0",)),
    Case("error_gpu_index_3_of_one", ("gpu_index=3",), gpus=(RTX_3080_FULL,)),
    Case("error_voice_precision_fp16", ("voice.precision=fp16",), gpus=(RTX_3080,)),
    Case(
        "error_enhance_tile_negative", ("enhance=realesrgan", "enhance.tile=-5"), gpus=(RTX_3080,)
    ),
    Case("error_pipeline_unknown_stage", ("pipeline.stages=[voice,dance]",)),
    Case("error_lipsync_unknown_option", ("lipsync=nope",)),
    # malformed overrides
    Case("error_override_without_value", ("steps",)),
    Case("error_override_unclosed_list", ("steps=[1,",)),
    Case("error_override_deletes_needed_key", ("~steps",)),
    # files and folders
    Case("error_config_name_missing", USER, files={"myconf/other.yaml": MINE_YAML_HEAD}),
    Case("error_config_dir_missing", ("--config-dir", "nodir")),
    Case(
        "error_config_path_instead_of_dir",
        ("--config-path", "myconf", "--config-name", "mine"),
        files=user_file(MINE_YAML_HEAD),
    ),
    Case(
        "error_user_file_invalid_yaml",
        USER,
        files=user_file(MINE_YAML_HEAD + "steps: [1\nquality: high\n"),
    ),
    Case(
        "error_user_file_without_config", USER, files=user_file("defaults:\n  - _self_\nsteps: 3\n")
    ),
    Case(
        "error_user_file_defaults_not_a_list", USER, files=user_file("defaults: config\nsteps: 3\n")
    ),
    Case("error_user_file_not_a_mapping", USER, files=user_file("- steps\n- 3\n")),
    Case(
        "error_yml_name",
        ("--config-dir", "myconf", "--config-name", "mine.yml"),
        files={"myconf/mine.yml": MINE_YAML_HEAD},
    ),
    Case("error_yml_file_instead_of_yaml", USER, files={"myconf/mine.yml": MINE_YAML_HEAD}),
    Case(
        "error_user_file_profile_as_value",
        USER,
        files=user_file(MINE_YAML_HEAD + "profile: low_vram\n"),
    ),
    Case(
        "error_user_file_profile_without_override",
        USER,
        files=user_file("defaults:\n  - config\n  - profile: low_vram\n  - _self_\n"),
    ),
    Case("error_user_file_unknown_key", USER, files=user_file(MINE_YAML_HEAD + "stepz: 3\n")),
    Case("error_user_file_steps_zero", USER, files=user_file(MINE_YAML_HEAD + "steps: 0\n")),
    Case(
        "error_user_file_stage_knob_out_of_range",
        (*USER, "voice=xtts_v2"),
        files=user_file(MINE_YAML_HEAD + "voice:\n  top_p: 7\n"),
    ),
    Case(
        "error_user_profile_steps_zero",
        ("--config-dir", "myconf", "profile=tiny"),
        files=profile_file("tiny", steps=0),
    ),
    Case(
        "error_user_profile_wrong_type",
        USER,
        files={**user_file(MINE_YAML_HEAD), **profile_file("big", vram_min_mib="lots")},
    ),
    Case(
        "error_user_profile_steps_many",
        ("--config-dir", "myconf"),
        files=profile_file("big", steps="many"),
    ),
]

CASES = STATUS_CASES + MULTIRUN_CASES + ERROR_CASES
CASES_BY_NAME = {case.name: case for case in CASES}
assert len(CASES_BY_NAME) == len(CASES), "case names must be unique"
