"""The pre-flight plan: each stage's VRAM need at the active settings, and whether the
pipeline fits (its largest stage, since the stages load one after another).

Configs are composed for real through load_config (profiles given explicitly, so no
detection runs); VRAM facts are VRAMStatus values, or the fake NVML for status.
Expected figures are read from the stage YAMLs, the one place they live.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from fakes import FakeGPU, FakeNvmlModule
from omegaconf import DictConfig

from avatar import load_config, stage_need_mib
from avatar.cli.status_view import build_status, render_status
from avatar.errors import ConfigValueError
from avatar.hardware.detect import detect_gpu
from avatar.vram.plan import VRAMBudget, budget_for, make_plan, plan_and_suggest
from avatar.vram.status import VRAMStatus

GTX_1650 = FakeGPU("NVIDIA GeForce GTX 1650", total_mib=4096, used_mib=300)


def measured(available_mib: float) -> VRAMBudget:
    return VRAMBudget(available_mib, "cuda:0", True, "test")


def vram(total_mib: float, free_mib: float, ok: bool = True) -> VRAMStatus:
    return VRAMStatus("cuda:0", total_mib, total_mib - free_mib, free_mib, ok=ok)


def largest_need(cfg: DictConfig) -> int:
    return max(stage_need_mib(cfg[s.value]) or 0 for s in cfg.pipeline.stages)


# ------------------------------------------------------------------------ rows


def test_the_plan_lists_the_pipeline_stages_in_order_with_their_chosen_options() -> None:
    cfg = load_config(["profile=rtx3080", "lipsync=sadtalker"])

    plan = make_plan(cfg, measured(20000))

    assert [(r.stage, r.option) for r in plan.rows] == [
        ("voice", "xtts_v2"),
        ("lipsync", "sadtalker"),
        ("enhance", "gfpgan"),
    ]
    assert [r.model for r in plan.rows] == [cfg.voice.model, cfg.lipsync.model, cfg.enhance.model]


def test_pipeline_stages_chooses_which_stages_are_planned_and_in_what_order() -> None:
    cfg = load_config(["profile=rtx3080", "pipeline.stages=[lipsync,voice]"])

    assert [r.stage for r in make_plan(cfg, measured(20000)).rows] == ["lipsync", "voice"]


def test_xtts_is_planned_at_fp32_even_under_an_fp16_profile() -> None:
    cfg = load_config(["profile=rtx3080"])
    assert cfg.profile.precision.value == "fp16"

    voice = make_plan(cfg, measured(20000)).rows[0]

    assert (voice.precision, voice.need_mib) == ("fp32", cfg.voice.vram_mib.fp32)
    assert cfg.voice.vram_mib.fp16 is None


def test_asking_xtts_for_fp16_is_refused_rather_than_planned() -> None:
    with pytest.raises(ConfigValueError, match=r"no working fp16 path.*voice\.precision=fp32"):
        load_config(["profile=rtx3080", "voice.precision=fp16"])


def test_a_stage_that_follows_the_profile_uses_the_profiles_precision() -> None:
    fp32 = load_config(["profile=rtx3080", "precision=fp32"])
    fp16 = load_config(["profile=rtx3080"])

    assert fp32.lipsync.precision.value == "fp32"
    assert stage_need_mib(fp32.lipsync) > stage_need_mib(fp16.lipsync)


def test_the_need_grows_with_the_profiles_batch_size_and_is_the_reported_figure_at_its_point() -> (
    None
):
    needs = {
        batch: stage_need_mib(load_config(["profile=rtx3080", f"batch_size={batch}"]).lipsync)
        for batch in (1, 2, 4, 8)
    }
    cfg = load_config(["profile=rtx3080"])

    assert needs[1] < needs[2] < needs[4] < needs[8]
    assert cfg.lipsync.vram_growth.at == 8
    assert needs[8] == cfg.lipsync.vram_mib.fp16  # MuseTalk's figure was reported at batch 8


def test_small_cards_get_small_realesrgan_tiles_and_tile_512_matches_the_reported_9_1_gb() -> None:
    small = load_config(["profile=low_vram", "enhance=realesrgan"])
    large = load_config(["profile=rtx4090", "enhance=realesrgan"])

    assert small.enhance.tile < large.enhance.tile
    assert stage_need_mib(small.enhance) == small.enhance.vram_mib.fp16  # reported at tile 256
    assert large.enhance.tile == 512
    assert stage_need_mib(large.enhance) == pytest.approx(9.1 * 1024, rel=0.01)  # facts.md


def test_a_cpu_only_stage_under_a_gpu_profile_runs_on_the_cpu_and_needs_no_vram() -> None:
    cfg = load_config(["profile=rtx3080", "voice=hibari"])

    voice = make_plan(cfg, measured(20000)).rows[0]

    assert (voice.device, voice.need_mib, voice.fits) == ("cpu", 0, True)


# --------------------------------------------------------------------- verdict


def test_the_largest_stage_plus_the_margin_decides_the_verdict() -> None:
    cfg = load_config(["profile=rtx3080"])
    exactly = largest_need(cfg) + cfg.safety_margin_mib

    fits = make_plan(cfg, measured(exactly))
    short = make_plan(cfg, measured(exactly - 1))

    assert fits.fits is True and fits.verdict.startswith("OK")
    assert fits.peak_need_mib == largest_need(cfg)
    assert short.fits is False
    assert short.verdict.startswith("NOT ENOUGH")
    assert f"{short.largest.stage} ({short.largest.model}): 1 MiB short" in short.verdict


def test_the_stages_need_not_fit_together_only_one_at_a_time() -> None:
    cfg = load_config(["profile=rtx3080"])
    total = sum(stage_need_mib(cfg[s.value]) for s in cfg.pipeline.stages)
    room = largest_need(cfg) + cfg.safety_margin_mib

    assert room < total
    assert make_plan(cfg, measured(room)).fits is True


def test_a_stage_that_does_not_fit_gets_a_lighter_option_and_a_smaller_profile_suggested() -> None:
    cfg = load_config(["profile=rtx3080"])  # forced onto a 4 GB card

    plan = plan_and_suggest(cfg, vram(total_mib=4096, free_mib=3796))

    assert plan.fits is False
    lipsync = plan.rows[1]
    assert (lipsync.stage, lipsync.fits) == ("lipsync", False)
    wav2lip = stage_need_mib(load_config(["profile=rtx3080", "lipsync=wav2lip"]).lipsync)
    assert f"lipsync=wav2lip ({wav2lip} MiB)" in plan.verdict
    assert "profile=low_vram" in plan.verdict
    assert "less than profile rtx3080 is meant for" in plan.budget.note


def test_without_a_gpu_a_gpu_profile_is_planned_against_its_nominal_card_and_says_so() -> None:
    cfg = load_config(["profile=rtx3080"])

    plan = plan_and_suggest(cfg, None)

    assert plan.budget.measured is False
    assert plan.budget.available_mib == cfg.profile.nominal_vram_mib
    assert "no usable GPU here" in plan.budget.note and "nominal" in plan.budget.note
    assert plan.fits is True
    assert "nominal card" in plan.verdict


def test_a_failed_vram_query_leaves_the_plan_unchecked() -> None:
    cfg = load_config(["profile=rtx3080"])

    plan = plan_and_suggest(cfg, vram(0, 0, ok=False))

    assert plan.fits is None
    assert {r.fits for r in plan.rows} == {None}
    assert "not checked" in plan.verdict


def test_the_cpu_profile_runs_cpu_capable_stages_and_needs_no_vram() -> None:
    cfg = load_config(["profile=cpu"])

    plan = plan_and_suggest(cfg, None)

    assert {r.device for r in plan.rows} == {"cpu"}
    assert plan.fits is True and plan.peak_need_mib == 0


def test_a_gpu_only_stage_under_the_cpu_profile_cannot_run_and_a_cpu_option_is_named() -> None:
    cfg = load_config(["profile=cpu", "lipsync=musetalk"])

    plan = plan_and_suggest(cfg, None)

    assert plan.fits is False
    assert plan.verdict.startswith("CANNOT RUN")
    assert "needs a GPU" in plan.verdict
    assert "lipsync=wav2lip (on the CPU)" in plan.verdict


def test_budget_for_a_measured_gpu_counts_torchs_unused_cache_as_available() -> None:
    cfg = load_config(["profile=rtx3080"])
    status = VRAMStatus("cuda:0", 10240, 8240, 2000, torch_reserved_mib=3000, torch_allocated_mib=0)

    assert budget_for(cfg, status).available_mib == 5000


# ---------------------------------------------------------------------- status


def test_status_shows_the_plan_and_its_verdict_for_the_fake_gpu(
    fake_nvml: Callable[..., FakeNvmlModule],
) -> None:
    fake_nvml([GTX_1650])
    cfg = load_config(["profile=rtx3080"])

    report = build_status(cfg, detection=detect_gpu(), reason="test")
    text = render_status(report)

    assert report.plan is not None and report.check.fits is False
    assert "Plan (stages load one at a time, so the largest must fit)" in text
    for row in report.plan.rows:
        assert any(
            line.split()[:2] == [row.stage, row.option] and f"{row.need_mib} MiB" in line
            for line in text.splitlines()
        ), row
    assert f"{GTX_1650.free_mib:.0f} MiB available on cuda:0" in text
    assert "NOT ENOUGH" in text and "lipsync=wav2lip" in text


def test_status_without_a_gpu_plans_the_forced_profile_against_its_nominal_vram() -> None:
    cfg = load_config(["profile=rtx3080"])

    report = build_status(cfg, detection=detect_gpu(), reason="test")
    text = render_status(report)

    assert f"nominal card, {cfg.profile.nominal_vram_mib} MiB" in text
    assert report.check.fits is True
    assert not math.isnan(report.plan.peak_need_mib)
