"""The documents a sweep leaves: each job's `status.json`, and the sweep's summary.

`status_document` turns a `StatusReport` (or a failure) into status.json's
content; `write_summary` reads every job's status.json back from the sweep dir
(jobs may have run in other processes or on other machines, so the disk is the
only common ground), prints the table and saves `summary.txt` and `summary.json`.
Hydra's side (the callback, what each job calls) is in `cli.sweep`.

status.json shape (`schema_version` 1; MiB everywhere; null where unknown):

    {
      "schema_version": 1,
      "ok": true,                          # false: the job failed, see "error"
      "error": null,                       # the user-facing error paragraph
      "avatar_version": "0.1.0",
      "job": {"num": 0, "overrides": ["profile=rtx3080", "steps=25"],
              "dir": "/abs/multirun/.../0", "host": "node12"},
      "profile": {"name": "rtx3080", "description": "...",
                  "reason": "set on the command line",
                  "auto_picked": false,            # chosen by the auto option at composition
                  "own_hardware_pick": "rtx3080",  # what this job's hardware would pick
                  "own_hardware_reason": "auto: 10240 MiB on GPU 0 (...) >= 8192 -> rtx3080",
                  "mismatch": null},               # a sentence when auto_picked and they differ
      "settings": {"precision": "fp16", "quality": "medium", "batch_size": 2, "steps": 25,
                   "safety_margin_mib": 512, "device": "cuda:0"},
      "hardware": {"backend": "nvml", "cpu_mode": false, "device": "cuda:0", "note": "...",
                   "gpus": [{"index": 0, "name": "...", "total_mib": 10240.0,
                             "used_mib": 300.0, "free_mib": 9940.0, "uuid": "GPU-...",
                             "nvml_index": 0, "backend": "nvml", "chosen": true}],
                   "ram": {"total_mib": 64000.0, "available_mib": 50000.0}},
      "vram": {"device": "cuda:0", "total_mib": ..., "used_mib": ..., "free_mib": ...,
               "available_mib": ..., "torch_reserved_mib": 0.0, "torch_allocated_mib": 0.0,
               "ok": true},
      "fits": true,                        # null: nothing to check (CPU profile, failed query)
      "fit_measured": true,                # false: checked against the profile's nominal
                                           # card, since the job saw no usable GPU
      "fit_message": "OK: one stage at a time, the largest, ... fits in 9940 MiB on cuda:0.",
      "notes": [],                         # sentences to read: a mismatch, a GPU not visible
      "plan": {                            # the stage plan (vram.plan.Plan), or null
        "rows": [{"stage": "lipsync", "option": "musetalk", "model": "MuseTalk 1.5",
                  "device": "gpu", "precision": "fp16", "need_mib": 3584, "fits": true,
                  "note": ""}, ...],
        "budget": {"available_mib": 9940.0, "device": "cuda:0", "measured": true, "note": "..."},
        "safety_margin_mib": 512, "fits": true, "verdict": "OK: ..."}
    }

A `python -m avatar.speak` job has its own section instead of the status's ("settings" to
"plan" are null there): "speech": {"path", "sample_rate_hz", "audio_s", "wall_s",
"real_time_factor", "load_s", "pieces", "language", "latents", "speaker", "voice" (the
voice option's settings, speed and all), "stage" (its VRAM stage record, or null)}.

A failed job has `ok: false`, `error`, `job`, and `profile.name` where the
config got that far; the other sections are null.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from avatar.cli.status_view import StatusReport
from avatar.cli.tables import fits_word, render_table
from avatar.config.profiles import ProfileChoice
from avatar.config.schema import Accelerator, plain_value
from avatar.version import __version__

SCHEMA_VERSION = 1
STATUS_FILE = "status.json"
SUMMARY_TEXT_FILE = "summary.txt"
SUMMARY_JSON_FILE = "summary.json"
# Written by the SLURM launcher beside status.json: the job's SLURM id, state and log.
SLURM_FILE = "slurm.json"
NOTE_WIDTH = 72  # the table's note column; the full text is listed under the table


# ---------------------------------------------------------------- per job


def profile_mismatch(
    composed: str, composed_reason: str, auto_picked: bool, own: ProfileChoice | None
) -> str | None:
    """A sentence when the auto choice made at composition differs from this job's own.

    Only an auto-picked profile can be wrong for the job's machine: one the user
    named is their decision (its fit is still checked and reported).
    """
    if not auto_picked or own is None or own.name == composed:
        return None
    return (
        f"profile {composed} was auto-picked where the sweep was composed ({composed_reason}), "
        f"but this job's own hardware would pick {own.name} ({own.reason}). "
        f"Pass profile=<name> explicitly when jobs run on other machines than the one "
        "that submits them."
    )


def hidden_gpu_note(
    report: StatusReport, profile_accelerator: Accelerator | str | None, env: Mapping[str, str]
) -> str | None:
    """Why a GPU profile's fit could not be checked in this job, when no GPU was visible.

    submitit's local executor sets CUDA_VISIBLE_DEVICES to the job's share of GPUs,
    which is none unless `hydra.launcher.gpus_per_node` is set: a trap worth naming.
    """
    if plain_value(profile_accelerator) != Accelerator.gpu.value or not report.detection.cpu_mode:
        return None
    note = f"no GPU visible to this job ({report.detection.note})"
    if report.detection.hidden_by_visible_devices and env.get("SUBMITIT_EXECUTOR") == "local":
        note += (
            "; submitit_local gives its jobs no GPU unless asked: add "
            "hydra.launcher.gpus_per_node=1"
        )
    return note


def status_document(
    *,
    job: Mapping[str, Any],
    report: StatusReport | None = None,
    error: str | None = None,
    profile_name: str | None = None,
    auto_picked: bool = False,
    own_choice: ProfileChoice | None = None,
    own_choice_error: str | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The status.json content (shape in the module docstring). Pure: no I/O."""
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "ok": error is None,
        "error": error,
        "avatar_version": __version__,
        "job": dict(job),
        "profile": None,
        "settings": None,
        "hardware": None,
        "vram": None,
        "fits": None,
        "fit_measured": None,
        "fit_message": None,
        "notes": list(notes),
        "plan": None,
    }
    if report is None:
        if profile_name is not None:
            doc["profile"] = {"name": profile_name, "auto_picked": auto_picked}
        return doc
    own_reason = own_choice.reason if own_choice is not None else own_choice_error
    doc["profile"] = {
        "name": report.profile_name,
        "description": report.profile_description,
        "reason": report.profile_reason,
        "auto_picked": auto_picked,
        "own_hardware_pick": own_choice.name if own_choice is not None else None,
        "own_hardware_reason": own_reason,
        "mismatch": profile_mismatch(
            report.profile_name, report.profile_reason, auto_picked, own_choice
        ),
    }
    if doc["profile"]["mismatch"]:
        doc["notes"].insert(0, doc["profile"]["mismatch"])
    doc["settings"] = jsonable(report.settings)
    d = report.detection
    chosen_index = d.chosen.index if d.chosen is not None else None
    doc["hardware"] = {
        "backend": d.backend.value,
        "cpu_mode": d.cpu_mode,
        "device": d.device,
        "note": d.note,
        "gpus": [{**jsonable(g), "chosen": g.index == chosen_index} for g in d.gpus],
        "ram": jsonable(d.ram),
    }
    doc["vram"] = {**jsonable(report.vram), "available_mib": report.vram.available_mib}
    plan = getattr(report, "plan", None)  # the stage plan, on reports that have one
    doc["fits"] = report.check.fits
    doc["fit_measured"] = _fit_measured(report, plan)
    doc["fit_message"] = report.check.message
    doc["plan"] = None if plan is None else jsonable(plan)
    return doc


def _fit_measured(report: StatusReport, plan: Any) -> bool | None:
    """Whether the fit was checked against this job's GPU, not a nominal card."""
    if report.check.fits is None:
        return None
    measured = getattr(getattr(plan, "budget", None), "measured", None)
    return (not report.detection.cpu_mode) if measured is None else bool(measured)


def jsonable(value: Any) -> Any:
    """Dataclasses, enums, paths and containers as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_status_file(job_dir: Path, doc: Mapping[str, Any]) -> Path:
    """Write status.json atomically (a reader never sees half a file)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / STATUS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


# ---------------------------------------------------------------- per sweep


@dataclass(frozen=True)
class JobRow:
    """One job in the summary, read back from its job dir."""

    num: int | None
    overrides: tuple[str, ...]
    profile: str | None
    fits: bool | None
    ok: bool  # False: failed, or no status.json (killed, timed out, still running)
    error: str | None
    mismatch: str | None
    job_dir: Path
    auto_picked: bool = False
    own_pick: str | None = None  # the profile the job's own hardware would pick
    notes: tuple[str, ...] = ()
    fit_measured: bool = True  # False: against the profile's nominal card (no GPU seen)
    slurm_job_id: str | None = None  # SLURM launcher only (slurm.json)
    slurm_state: str | None = None  # COMPLETED, CANCELLED, TIMEOUT, ...
    log_path: Path | None = None
    finished: bool = True  # False: no status.json (the job never got to its end)

    @property
    def fits_text(self) -> str:
        if not self.ok:
            state = self.slurm_state
            return state if state and state != "COMPLETED" else "FAILED"
        if self.fits is None:
            return fits_word(None)
        return fits_word(self.fits) + ("" if self.fit_measured else " (nominal)")

    @property
    def profile_text(self) -> str:
        return (self.profile or "?") + (" (auto)" if self.auto_picked else "")

    @property
    def note(self) -> str:
        """The table's note: the error, or a short form of a profile mismatch."""
        if self.error:
            return self.error
        if self.mismatch:
            return f"MISMATCH: this job's hardware would pick {self.own_pick}"
        return self.notes[0] if self.notes else ""

    @property
    def detail(self) -> str:
        """The full note, listed under the table."""
        return self.error or (self.notes[0] if self.notes else "")

    def with_slurm(self, record: Mapping[str, Any]) -> JobRow:
        """This row with the SLURM launcher's record; a job SLURM ended early is not ok."""
        state = str(record.get("state") or "") or None
        log = record.get("log")
        ok, error = self.ok, self.error
        if state and state != "COMPLETED" and (ok or error is None or "no status.json" in error):
            ok = False
            error = f"SLURM state {state}" + (f": {record['note']}" if record.get("note") else "")
        return dataclasses.replace(
            self,
            ok=ok,
            error=error,
            slurm_job_id=None if record.get("job_id") is None else str(record["job_id"]),
            slurm_state=state,
            log_path=None if not log else Path(str(log)),
        )


@dataclass(frozen=True)
class Summary:
    sweep_dir: Path
    jobs: tuple[JobRow, ...]
    stopped_early: bool = False  # Hydra skipped on_multirun_end (a job raised, or was lost)
    interrupted: bool = False  # the user pressed Ctrl-C (SIGINT)
    planned: int | None = None  # the jobs the sweep held; None when not known

    @property
    def failed(self) -> tuple[JobRow, ...]:
        return tuple(j for j in self.jobs if not j.ok)

    @property
    def done(self) -> int:
        """The jobs that ran to their end (ok or failed with their error in status.json)."""
        return sum(1 for j in self.jobs if j.finished)

    def failure_message(self) -> str:
        """What cli.main prints before exiting 1 because jobs failed."""
        nums = ", ".join("-" if j.num is None else str(j.num) for j in self.failed)
        return (
            f"{len(self.failed)} of {len(self.jobs)} sweep jobs failed (job {nums}); the other "
            f"jobs' results are kept. Errors: in the summary above, in "
            f"{_shown_path(self.sweep_dir / SUMMARY_TEXT_FILE)}, and in each job's {STATUS_FILE}."
        )


def _row_from_status(job_dir: Path, doc: Mapping[str, Any]) -> JobRow:
    job = doc.get("job") or {}
    profile = doc.get("profile") or {}
    num = job.get("num")
    return JobRow(
        num=int(job_dir.name) if num is None and job_dir.name.isdigit() else num,
        overrides=tuple(job.get("overrides") or ()),
        profile=profile.get("name"),
        fits=doc.get("fits"),
        ok=bool(doc.get("ok")),
        error=doc.get("error"),
        mismatch=profile.get("mismatch"),
        job_dir=job_dir,
        auto_picked=bool(profile.get("auto_picked")),
        own_pick=profile.get("own_hardware_pick"),
        notes=tuple(doc.get("notes") or ()),
        fit_measured=doc.get("fit_measured") is not False,
    )


def _row_without_status(job_dir: Path, slurm: Mapping[str, Any] | None = None) -> JobRow:
    overrides: tuple[str, ...] = tuple((slurm or {}).get("overrides") or ())
    try:
        loaded = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text("utf-8"))
        overrides = tuple(str(o) for o in loaded or ())
    except (OSError, yaml.YAMLError):
        pass
    profile = next((o.split("=", 1)[1] for o in overrides if o.startswith("profile=")), None)
    return JobRow(
        num=int(job_dir.name) if job_dir.name.isdigit() else None,
        overrides=overrides,
        profile=profile,
        fits=None,
        ok=False,
        error=f"no {STATUS_FILE}: the job did not finish (interrupted, killed, timed out, or "
        "still running)" + _log_hint(job_dir, slurm),
        mismatch=None,
        job_dir=job_dir,
        finished=False,
    )


def _log_hint(job_dir: Path, slurm: Mapping[str, Any] | None) -> str:
    """Where the job's log is, named only when the file is there (a basic or joblib job
    logs to the terminal, and writes no log file unless the user's logging config does)."""
    named = (slurm or {}).get("log")
    candidates = [Path(str(named))] if named else []
    candidates += sorted(job_dir.glob("*.log"))
    found = next((p for p in candidates if p.is_file()), None)
    return "" if found is None else f"; see its log {_shown_path(found)}"


def collect_jobs(sweep_dir: Path) -> list[JobRow]:
    """Every job dir under the sweep dir (one with .hydra/ or status.json), in job order."""
    job_dirs = {p.parent for p in sweep_dir.rglob(STATUS_FILE)}
    job_dirs |= {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    job_dirs |= {p.parent for p in sweep_dir.rglob(SLURM_FILE)}
    rows = []
    for job_dir in job_dirs:
        if ".submitit" in job_dir.relative_to(sweep_dir).parts:
            continue
        slurm = _read_json(job_dir / SLURM_FILE)
        doc = _read_json(job_dir / STATUS_FILE)
        row = _row_without_status(job_dir, slurm) if doc is None else _row_from_status(job_dir, doc)
        rows.append(row if slurm is None else row.with_slurm(slurm))
    return sorted(rows, key=lambda r: (r.num is None, r.num or 0, str(r.job_dir)))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _shown_path(path: Path) -> str:
    """Relative to the working dir where possible: shorter, and what the user typed."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def render_summary(summary: Summary) -> str:
    """The summary table, as printed and saved in summary.txt."""
    jobs = summary.jobs
    failed = len(summary.failed)
    mismatched = sum(1 for j in jobs if j.mismatch)
    head = (
        f"Sweep summary: {len(jobs)} jobs, {len(jobs) - failed} ok, {failed} failed"
        + (f", {mismatched} with a profile mismatch" if mismatched else "")
        + f"  ({_shown_path(summary.sweep_dir)})"
    )
    lines = [head]
    if summary.interrupted:
        planned = "?" if summary.planned is None else str(summary.planned)
        lines.append(
            f"  INTERRUPTED (Ctrl-C): {summary.done} of {planned} planned jobs done; jobs that "
            "never started are not listed"
        )
    elif summary.stopped_early:
        lines.append("  (Hydra stopped the sweep early; jobs that never started are not listed)")
    header: tuple[str, ...] = ("job", "overrides", "profile", "fits", "job dir", "note")
    rows = [
        (
            "-" if j.num is None else str(j.num),
            " ".join(j.overrides) or "(none)",
            j.profile_text,
            j.fits_text,
            _shown_path(j.job_dir),
            _clip(j.note, NOTE_WIDTH),
        )
        for j in jobs
    ]
    on_slurm = any(j.slurm_job_id for j in jobs)
    if on_slurm:  # the SLURM launcher's jobs: their ids, between job and overrides
        header = (header[0], "slurm job", *header[1:])
        rows = [(r[0], j.slurm_job_id or "-", *r[1:]) for r, j in zip(rows, jobs, strict=True)]
    lines += render_table(header, rows)
    details = [j for j in jobs if j.detail and j.detail != _clip(j.note, NOTE_WIDTH)]
    if details:
        lines += ["", "Notes in full:"]
        lines += [f"  job {'-' if j.num is None else j.num}: {j.detail}" for j in details]
    logs = [j for j in jobs if j.log_path and not j.ok]
    if logs:
        lines += ["", "SLURM logs of the jobs that did not succeed:"]
        lines += [
            f"  job {'-' if j.num is None else j.num} (SLURM job {j.slurm_job_id}, "
            f"{j.slurm_state}): {_shown_path(j.log_path)}"
            for j in logs
            if j.log_path
        ]
    if on_slurm:
        lines += [
            "",
            "Still on the cluster? squeue -j <slurm job>; cancel with scancel <slurm job>. "
            "Every job's log: <sweep dir>/.submitit/<slurm job>/",
        ]
    lines += [
        "",
        "fits: yes/NO = the job's free VRAM covers what its settings need plus the margin; "
        "(nominal) = checked against\nthe profile's nominal card, as the job saw no usable GPU; "
        "n/a = nothing to check. (auto) = chosen by the auto profile\nwhere the sweep was "
        "composed. Each job's details: <job dir>/" + STATUS_FILE,
    ]
    return "\n".join(lines)


def summary_document(summary: Summary) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "sweep_dir": str(summary.sweep_dir.resolve()),
        "stopped_early": summary.stopped_early,
        "interrupted": summary.interrupted,
        "planned": summary.planned,
        "done": summary.done,
        "jobs": [
            {
                "num": j.num,
                "overrides": list(j.overrides),
                "profile": j.profile,
                "fits": j.fits,
                "fit_measured": j.fit_measured,
                "ok": j.ok,
                "error": j.error,
                "auto_picked": j.auto_picked,
                "own_hardware_pick": j.own_pick,
                "mismatch": j.mismatch,
                "notes": list(j.notes),
                "dir": str(j.job_dir.resolve()),
                **_slurm_entry(j),
            }
            for j in summary.jobs
        ],
    }


def _slurm_entry(job: JobRow) -> dict[str, Any]:
    """`"slurm": {job_id, state, log}` for the SLURM launcher's jobs; nothing for others."""
    if job.slurm_job_id is None:
        return {}
    log = None if job.log_path is None else str(job.log_path)
    return {"slurm": {"job_id": job.slurm_job_id, "state": job.slurm_state, "log": log}}


def write_summary(
    sweep_dir: Path,
    *,
    stopped_early: bool = False,
    interrupted: bool = False,
    planned: int | None = None,
) -> Summary | None:
    """Read the jobs, print the table and save it; None when no job ever started."""
    jobs = collect_jobs(sweep_dir)
    if not jobs:
        return None
    summary = Summary(sweep_dir, tuple(jobs), stopped_early, interrupted, planned)
    text = render_summary(summary)
    (sweep_dir / SUMMARY_TEXT_FILE).write_text(text + "\n", encoding="utf-8")
    (sweep_dir / SUMMARY_JSON_FILE).write_text(
        json.dumps(summary_document(summary), indent=2) + "\n", encoding="utf-8"
    )
    print("\n" + text, flush=True)
    return summary
