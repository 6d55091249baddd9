"""Calibrate the speaker check on real speech from many speakers, and time the encoder.

    python benchmarks/speaker_calibration.py                 # about 3 minutes on 2 busy cores
    python benchmarks/speaker_calibration.py --rounds 21 --work-dir /tmp/spk

Why: the speaker check (avatar/stages/voice/speaker.py) flags a clip whose similarity to the
centroid of the voice's other clips is below a threshold. That threshold must come from a
measurement (issue 13), on the statistic the check actually uses.

The speech: Debian's Festival voices, built from recordings of real people (apt packages
festival + festvox-*), and the light engine's packaged voice (hibari `heart`). Several
sentences per speaker, different sentences for each clip, each clip normalised exactly as the
voice store does (mono, 22,050 Hz, PCM_16 WAV) before it is embedded. These are synthetic
renderings of real speakers, so the figures hold for this material; different speakers are
paired within one language (a language change alone would make them easier to tell apart).

What it measures:
1. Pairs of clips: same speaker vs different speakers of one language, and the same-gender
   English pairs (kal/ked, slt/heart) that matter most; their distributions and EER.
2. The check itself: voices of N = 3 and 5 clips of one speaker (every clip's leave-one-out
   score is a "genuine" score) and the same voices with one clip replaced by another speaker
   of the language (the intruder's score is an "impostor" score). The equal error rate of
   genuine vs impostor, and the threshold at that point, are the calibration; the figures at
   the chosen threshold (missed intruders, falsely flagged clips, also among the genuine clips
   of a voice holding an intruder) are reported per N and per group.
3. Cost: seconds of one CPU core per second of reference audio, avatar's `SpeakerEncoder.embed`
   against resemblyzer called directly (`preprocess_wav(samples, source_sr)` +
   `VoiceEncoder.embed_utterance`) on the same audio, alternated rounds (ABBA), process CPU
   time, pinned to one core with torch on one thread. Goal: at most 1.05x.

Results: benchmarks/results/speaker-calibration.md and speaker-calibration.json (raw scores).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
GOAL_RATIO = 1.05  # issue 13: avatar's embedding within 1.05x of resemblyzer called directly
GOAL_EER = 0.05  # issue 13: aim for an equal error rate of 5 % or less
SEED = 13
VOICE_SIZES = (3, 5)  # clips per voice in the check's calibration
INTRUDER_CONTEXTS = 8  # random sets of the host speaker's other clips per intruder clip

SENTENCES: dict[str, list[str]] = {
    "en": [
        "The quick brown fox jumps over the lazy dog near the river bank.",
        "Please call Stella and ask her to bring these things from the store.",
        "We will meet at the station at half past seven tomorrow morning.",
        "A large fraction of the old library was destroyed in the winter fire.",
        "Could you tell me the way to the nearest post office, please?",
        "The committee decided to postpone the vote until next Thursday.",
        "Fresh bread and warm coffee are the best way to start a long day.",
        "Every summer the children swim in the lake behind their grandmother's house.",
    ],
    "cs": [
        "Dobrý den, dnes je krásné počasí a slunce svítí nad městem.",
        "Vlak do Brna odjíždí z třetího nástupiště v osm hodin ráno.",
        "Moje sestra studuje medicínu na Karlově univerzitě v Praze.",
        "Na zahradě rostou jablka, hrušky a několik starých švestek.",
        "Prosím, zavřete okno, protože venku začíná foukat studený vítr.",
        "Knihovna je otevřená každý den kromě neděle a státních svátků.",
        "Včera večer jsme byli v divadle na představení o dvou bratrech.",
        "Děti si hrají na hřišti za školou až do pozdního odpoledne.",
    ],
    "it": [
        "Buongiorno, oggi il tempo è bello e il sole splende sulla città.",
        "Il treno per Milano parte dal terzo binario alle otto del mattino.",
        "Mia sorella studia medicina all'università di Bologna da due anni.",
        "Nel giardino crescono mele, pere e qualche vecchio albero di prugne.",
        "Per favore, chiudi la finestra perché fuori comincia a fare freddo.",
        "La biblioteca è aperta ogni giorno tranne la domenica e i festivi.",
        "Ieri sera siamo andati a teatro a vedere una commedia divertente.",
        "I bambini giocano nel cortile dietro la scuola fino a tardi.",
    ],
    "fi": [
        "Hyvää huomenta, tänään on kaunis ilma ja aurinko paistaa kaupungin yllä.",
        "Juna Tampereelle lähtee raiteelta kolme kello kahdeksan aamulla.",
        "Siskoni opiskelee lääketiedettä Helsingin yliopistossa.",
        "Puutarhassa kasvaa omenoita, päärynöitä ja muutama vanha luumupuu.",
        "Sulje ikkuna, ole hyvä, koska ulkona alkaa tuulla kylmästi.",
        "Kirjasto on auki joka päivä paitsi sunnuntaisin ja pyhäpäivinä.",
        "Eilen illalla kävimme teatterissa katsomassa hauskan näytelmän.",
        "Lapset leikkivät koulun takana pihalla myöhään iltapäivään asti.",
    ],
}


@dataclass(frozen=True)
class Speaker:
    id: str
    language: str
    gender: str  # of the recorded person, from the package description
    source: str  # festival voice name (text2wave -eval '(voice_NAME)') or "hibari:<voice>"
    encoding: str  # the text encoding festival's lexicon for this voice reads
    note: str


SPEAKERS = [
    Speaker("kal", "en", "male", "kal_diphone", "ascii", "festvox-kallpc16k, American English"),
    Speaker("ked", "en", "male", "ked_diphone", "ascii", "festvox-kdlpc16k, American English"),
    Speaker("slt", "en", "female", "cmu_us_slt_arctic_hts", "ascii", "festvox-us-slt-hts, US"),
    Speaker("heart", "en", "female", "hibari:heart", "utf-8", "hibari-tts 0.2.1, American"),
    Speaker("dita", "cs", "female", "czech_dita", "iso-8859-2", "festvox-czech-dita, adult"),
    Speaker("machac", "cs", "male", "czech_machac", "iso-8859-2", "festvox-czech-machac, adult"),
    Speaker("krb", "cs", "male (child)", "czech_krb", "iso-8859-2", "festvox-czech-krb, child"),
    Speaker("ph", "cs", "male", "czech_ph", "iso-8859-2", "festvox-czech-ph"),
    Speaker("lp", "it", "female", "lp_diphone", "latin-1", "festvox-italp16k"),
    Speaker("pc", "it", "male", "pc_diphone", "latin-1", "festvox-itapc16k"),
    Speaker("lj", "fi", "female", "suo_fi_lj_diphone", "latin-1", "festvox-suopuhe-lj"),
    Speaker("mv", "fi", "male", "hy_fi_mv_diphone", "latin-1", "festvox-suopuhe-mv"),
]
APT_PACKAGES = (
    "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festvox-czech-dita "
    "festvox-czech-machac festvox-czech-krb festvox-czech-ph festvox-italp16k festvox-itapc16k "
    "festvox-suopuhe-lj festvox-suopuhe-mv"
)


# ---------------------------------------------------------------------------------------------
# Speech


def festival_clip(voice: str, text: str, encoding: str, out: Path) -> None:
    """One sentence through Festival's text2wave into a WAV at the voice's own rate."""
    subprocess.run(
        ["text2wave", "-eval", f"(voice_{voice})", "-o", str(out)],
        input=text.encode(encoding),
        check=True,
        capture_output=True,
        timeout=120,
    )


def make_clips(work_dir: Path) -> dict[str, list[tuple[str, Any]]]:
    """speaker id -> [(clip name, float32 samples at 22,050 Hz, as the voice store keeps them)]."""
    import numpy as np
    import soundfile

    from avatar.stages.voice.audio import NORMALISED_SAMPLE_RATE_HZ, to_normalised, wav_bytes

    clips: dict[str, list[tuple[str, Any]]] = {}
    light = None
    for speaker in SPEAKERS:
        clips[speaker.id] = []
        for index, text in enumerate(SENTENCES[speaker.language]):
            name = f"{speaker.id}-{index + 1}"
            stored = work_dir / f"{name}.wav"
            if not stored.exists():
                if speaker.source.startswith("hibari:"):
                    if light is None:
                        from avatar.stages.voice.light import LightEngine

                        light = LightEngine(speaker.source.split(":", 1)[1])
                    samples, rate = light.synthesize(text, seed=index), light.sample_rate_hz
                else:
                    raw = work_dir / f"{name}.raw.wav"
                    festival_clip(speaker.source, text, speaker.encoding, raw)
                    samples, rate = soundfile.read(raw, dtype="float32", always_2d=True)
                    raw.unlink()
                stored.write_bytes(wav_bytes(to_normalised(samples, rate)))
            samples, rate = soundfile.read(stored, dtype="float32")
            assert rate == NORMALISED_SAMPLE_RATE_HZ
            clips[speaker.id].append((name, np.asarray(samples)))
    if light is not None:
        light.close()
    return clips


# ---------------------------------------------------------------------------------------------
# Statistics (pure)


def equal_error_rate(genuine: list[float], impostor: list[float]) -> tuple[float, float]:
    """(EER, threshold): where the rate of genuine scores below the threshold (falsely flagged)
    meets the rate of impostor scores at or above it (missed). Thresholds tried: every score
    and the midpoints between neighbours; the EER is the mean of the two rates there, and the
    threshold the middle of the range of thresholds that reach it."""
    import numpy as np

    g = np.sort(np.asarray(genuine, dtype=np.float64))
    i = np.sort(np.asarray(impostor, dtype=np.float64))
    scores = np.unique(np.concatenate([g, i]))
    candidates = np.concatenate([scores, (scores[1:] + scores[:-1]) / 2])
    frr = np.searchsorted(g, candidates, side="left") / len(g)  # genuine < t
    far = 1.0 - np.searchsorted(i, candidates, side="left") / len(i)  # impostor >= t
    gap = np.abs(frr - far)
    mean = (frr + far) / 2
    best = np.flatnonzero(gap == gap.min())
    best = best[mean[best] == mean[best].min()]
    # Where the distributions do not overlap, every threshold in the gap between them has the
    # same (zero) error: take the middle of that range, not an edge of one distribution.
    low, high = candidates[best].min(), candidates[best].max()
    below = scores[scores < low]
    low = below.max() if below.size else low  # the range starts just above the score below it
    return float(mean[best[0]]), float((low + high) / 2)


def error_rates(genuine: list[float], impostor: list[float], threshold: float) -> tuple[float, ...]:
    """(false flags: genuine below threshold, misses: impostor at or above it), as fractions."""
    frr = sum(s < threshold for s in genuine) / len(genuine) if genuine else 0.0
    far = sum(s >= threshold for s in impostor) / len(impostor) if impostor else 0.0
    return frr, far


def describe(scores: list[float]) -> dict[str, float | int]:
    import numpy as np

    a = np.asarray(scores)
    q = np.percentile(a, [5, 25, 50, 75, 95])
    return {
        "n": len(scores),
        "min": float(a.min()),
        "p5": float(q[0]),
        "p25": float(q[1]),
        "median": float(q[2]),
        "p75": float(q[3]),
        "p95": float(q[4]),
        "max": float(a.max()),
    }


# ---------------------------------------------------------------------------------------------
# Measurements


def pair_scores(embeddings: dict[str, list[Any]]) -> dict[str, list[tuple[str, str, float]]]:
    """All pairs of clips, grouped: same speaker / different speaker, same language / not."""
    from avatar.stages.voice.speaker import similarity

    by_id = {s.id: s for s in SPEAKERS}
    items = [(sid, i, e) for sid, es in embeddings.items() for i, e in enumerate(es)]
    groups: dict[str, list[tuple[str, str, float]]] = {
        "same_speaker": [],
        "different_speaker_same_language": [],
        "different_speaker_same_language_same_gender": [],
        "different_speaker_english_same_gender": [],
        "different_language": [],
    }
    for (sa, ia, ea), (sb, ib, eb) in itertools.combinations(items, 2):
        score = round(similarity(ea, eb), 4)
        row = (f"{sa}-{ia + 1}", f"{sb}-{ib + 1}", score)
        a, b = by_id[sa], by_id[sb]
        if sa == sb:
            groups["same_speaker"].append(row)
        elif a.language == b.language:
            groups["different_speaker_same_language"].append(row)
            if a.gender == b.gender:
                groups["different_speaker_same_language_same_gender"].append(row)
                if a.language == "en":
                    groups["different_speaker_english_same_gender"].append(row)
        else:
            groups["different_language"].append(row)
    return groups


def check_scores(embeddings: dict[str, list[Any]], rng: random.Random) -> dict[str, Any]:
    """Leave-one-out scores of the check on clean voices and on voices holding one intruder."""
    from avatar.stages.voice.speaker import consistency

    out: dict[str, Any] = {}
    for n in VOICE_SIZES:
        genuine: list[dict[str, Any]] = []
        intruders: list[dict[str, Any]] = []
        for host in SPEAKERS:
            clips = embeddings[host.id]
            for subset in itertools.combinations(range(len(clips)), n):
                scores = consistency([clips[i] for i in subset]).scores
                genuine.append({"speaker": host.id, "clips": list(subset), "scores": scores})
            for other in SPEAKERS:
                if other.id == host.id or other.language != host.language:
                    continue
                for b, intruder in enumerate(embeddings[other.id]):
                    contexts = list(itertools.combinations(range(len(clips)), n - 1))
                    for subset in rng.sample(contexts, min(INTRUDER_CONTEXTS, len(contexts))):
                        voice = [clips[i] for i in subset] + [intruder]
                        scores = consistency(voice).scores
                        intruders.append(
                            {
                                "host": host.id,
                                "intruder": f"{other.id}-{b + 1}",
                                "same_gender": host.gender == other.gender,
                                "host_clips": list(subset),
                                "intruder_score": scores[-1],
                                "host_scores": scores[:-1],
                            }
                        )
        out[str(n)] = {"genuine": genuine, "intruders": intruders}
    return out


def end_to_end(
    embeddings: dict[str, list[Any]], check: dict[str, Any], threshold: float
) -> dict[str, dict[str, float]]:
    """The whole check (`check_voice`: odd clips kept out of the reference) at `threshold` on
    the same voices: which clips it names."""
    from avatar.stages.voice.speaker import check_voice

    def named(voice: dict[str, Any]) -> set[str]:
        return {c.name for c in check_voice(voice, threshold)[1].odd}

    out: dict[str, dict[str, float]] = {}
    for n in VOICE_SIZES:
        clean_voices = clean_flagged = clean_clips = 0
        caught = hosts_flagged = host_clips = 0
        en_caught = en_total = 0
        for v in check[str(n)]["genuine"]:
            es = embeddings[v["speaker"]]
            flagged = named({f"{v['speaker']}-{i + 1}": es[i] for i in v["clips"]})
            clean_voices += bool(flagged)
            clean_flagged += len(flagged)
            clean_clips += len(v["clips"])
        for v in check[str(n)]["intruders"]:
            es = embeddings[v["host"]]
            voice = {f"{v['host']}-{i + 1}": es[i] for i in v["host_clips"]}
            other, index = v["intruder"].rsplit("-", 1)
            voice[v["intruder"]] = embeddings[other][int(index) - 1]
            flagged = named(voice)
            hit = v["intruder"] in flagged
            caught += hit
            hosts_flagged += len(flagged - {v["intruder"]})
            host_clips += len(v["host_clips"])
            if v["same_gender"] and v["host"] in ("kal", "ked", "slt", "heart"):
                en_caught += hit
                en_total += 1
        count = len(check[str(n)]["intruders"])
        out[str(n)] = {
            "clean_voices": len(check[str(n)]["genuine"]),
            "clean_voices_with_a_clip_named": clean_voices / len(check[str(n)]["genuine"]),
            "clean_clips_named": clean_flagged / clean_clips,
            "intruder_voices": count,
            "intruders_named": caught / count,
            "host_clips_named_beside_an_intruder": hosts_flagged / host_clips,
            "english_same_gender_intruders_named": en_caught / en_total if en_total else 0.0,
        }
    return out


def flatten_check(
    check: dict[str, Any], sizes: tuple[int, ...], only: Any = None
) -> tuple[list[float], list[float], list[float]]:
    """(genuine scores of clean voices, intruder scores, host clips' scores beside an intruder)."""
    genuine: list[float] = []
    impostor: list[float] = []
    hosts: list[float] = []
    for n in sizes:
        for voice in check[str(n)]["genuine"]:
            if only is None or only(voice["speaker"], None):
                genuine.extend(voice["scores"])
        for voice in check[str(n)]["intruders"]:
            if only is None or only(voice["host"], voice):
                impostor.append(voice["intruder_score"])
                hosts.extend(voice["host_scores"])
    return genuine, impostor, hosts


def time_embedding(clips: list[tuple[str, Any]], rounds: int) -> dict[str, Any]:
    """avatar's SpeakerEncoder.embed vs resemblyzer directly on the same audio, one core."""
    import numpy as np
    import torch
    from resemblyzer import VoiceEncoder, preprocess_wav

    from avatar.stages.voice.audio import NORMALISED_SAMPLE_RATE_HZ as RATE
    from avatar.stages.voice.speaker import SpeakerEncoder, similarity

    torch.set_num_threads(1)
    avatar_encoder = SpeakerEncoder("cpu")
    direct_encoder = VoiceEncoder("cpu", verbose=False)
    audio = [samples for _, samples in clips]
    audio_s = sum(len(a) for a in audio) / RATE

    def run_avatar() -> list[Any]:
        return [avatar_encoder.embed(a, RATE) for a in audio]

    def run_direct() -> list[Any]:
        return [direct_encoder.embed_utterance(preprocess_wav(a, source_sr=RATE)) for a in audio]

    # Warm-up (librosa's and numba's first calls), and the agreement of the two embeddings.
    agree = [similarity(x, y) for x, y in zip(run_avatar(), run_direct(), strict=True)]
    per_round: list[dict[str, float]] = []
    for r in range(rounds):
        order = (("avatar", run_avatar), ("direct", run_direct))
        if r % 2:
            order = order[::-1]
        row: dict[str, float] = {}
        for name, fn in order:
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            row[f"{name}_cpu_s"] = time.process_time() - cpu
            row[f"{name}_wall_s"] = time.perf_counter() - wall
        per_round.append(row)
    ratios = [row["avatar_cpu_s"] / row["direct_cpu_s"] for row in per_round]
    avatar_cpu = statistics.median(row["avatar_cpu_s"] for row in per_round)
    direct_cpu = statistics.median(row["direct_cpu_s"] for row in per_round)
    avatar_wall = statistics.median(row["avatar_wall_s"] for row in per_round)
    direct_wall = statistics.median(row["direct_wall_s"] for row in per_round)
    return {
        "clips": len(audio),
        "audio_s": audio_s,
        "rounds": rounds,
        "ratio_cpu_median_of_rounds": statistics.median(ratios),
        "ratio_wall_of_medians": avatar_wall / direct_wall,
        "avatar_cpu_s_per_audio_s": avatar_cpu / audio_s,
        "direct_cpu_s_per_audio_s": direct_cpu / audio_s,
        "avatar_wall_s_per_audio_s": avatar_wall / audio_s,
        "direct_wall_s_per_audio_s": direct_wall / audio_s,
        "embedding_agreement_min": float(np.min(agree)),
        "per_round": per_round,
    }


# ---------------------------------------------------------------------------------------------
# Report


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def dist_row(label: str, scores: list[float]) -> str:
    d = describe(scores)
    return (
        f"| {label} | {d['n']} | {d['min']:.3f} | {d['p5']:.3f} | {d['p25']:.3f} | "
        f"{d['median']:.3f} | {d['p75']:.3f} | {d['p95']:.3f} | {d['max']:.3f} |"
    )


DIST_HEADER = (
    "| scores | n | min | p5 | p25 | median | p75 | p95 | max |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def versions() -> dict[str, str]:
    names = ["resemblyzer", "torch", "numpy", "scipy", "librosa", "webrtcvad", "soxr"]
    names += ["soundfile", "hibari-tts", "setuptools"]
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    try:
        banner = subprocess.run(
            ["festival", "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except OSError:
        banner = "absent"
    out["festival"] = banner
    return out


def compact_check(check: dict[str, Any]) -> dict[str, Any]:
    """The check's raw scores, compact: [speaker, clip indices, scores] and
    [host, intruder clip, host clip indices, intruder score, host scores]."""
    return {
        n: {
            "genuine": [
                [v["speaker"], v["clips"], [round(x, 3) for x in v["scores"]]] for v in c["genuine"]
            ],
            "intruders": [
                [
                    v["host"],
                    v["intruder"],
                    v["host_clips"],
                    round(v["intruder_score"], 3),
                    [round(x, 3) for x in v["host_scores"]],
                ]
                for v in c["intruders"]
            ],
        }
        for n, c in check.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11, help="timing rounds (alternated)")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the clips here")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "speaker-calibration.md")
    args = parser.parse_args(argv)

    if shutil.which("text2wave") is None:
        print(
            f"Festival's text2wave is missing: apt-get install -y {APT_PACKAGES}", file=sys.stderr
        )
        return 1
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from avatar.stages.voice.speaker import SpeakerEncoder

    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="speaker-calibration-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    clips = make_clips(work_dir)
    synth_s = time.perf_counter() - started
    encoder = SpeakerEncoder("cpu")
    embeddings = {sid: [encoder.embed(s, 22_050) for _, s in cs] for sid, cs in clips.items()}
    encoder.close()
    durations = [len(s) / 22_050 for cs in clips.values() for _, s in cs]

    pairs = pair_scores(embeddings)
    check = check_scores(embeddings, random.Random(SEED))
    by_id = {s.id: s for s in SPEAKERS}

    def same_gender_en(host: str, voice: Any) -> bool:
        if by_id[host].language != "en":
            return False
        return voice is None or voice["same_gender"]

    pair_scores_of = {k: [r[2] for r in v] for k, v in pairs.items()}
    pair_eer = equal_error_rate(
        pair_scores_of["same_speaker"], pair_scores_of["different_speaker_same_language"]
    )
    pair_eer_en = equal_error_rate(
        pair_scores_of["same_speaker"], pair_scores_of["different_speaker_english_same_gender"]
    )
    g_all, i_all, h_all = flatten_check(check, VOICE_SIZES)
    eer, threshold_at_eer = equal_error_rate(g_all, i_all)
    threshold = round(threshold_at_eer, 2)
    per_n = {}
    for n in VOICE_SIZES:
        g, i, h = flatten_check(check, (n,))
        per_n[n] = (
            equal_error_rate(g, i),
            error_rates(g, i, threshold),
            error_rates(h, [], threshold),
        )
    g_en, i_en, _ = flatten_check(check, VOICE_SIZES, same_gender_en)
    en_eer = equal_error_rate(g_en, i_en)
    whole = end_to_end(embeddings, check, threshold)
    timing = time_embedding(clips["kal"] + clips["slt"], args.rounds)
    total_s = time.perf_counter() - started

    pair_catch: dict[tuple[str, str], list[float]] = {}
    for n in VOICE_SIZES:
        for voice in check[str(n)]["intruders"]:
            key = (voice["host"], voice["intruder"].rsplit("-", 1)[0])
            pair_catch.setdefault(key, []).append(voice["intruder_score"])

    names = [f"{sid}-{i + 1}" for sid, es in embeddings.items() for i in range(len(es))]
    flat = np.stack([e for es in embeddings.values() for e in es]).astype(np.float64)
    gram = flat @ flat.T
    upper = np.triu_indices(len(names), k=1)
    raw = {
        "what": "speaker check calibration (benchmarks/speaker_calibration.py)",
        "speakers": [s.__dict__ for s in SPEAKERS],
        "sentences": SENTENCES,
        "clips": names,
        "clip_seconds": [round(d, 3) for d in durations],
        "pair_scores_upper_triangle": [round(float(x), 3) for x in gram[upper]],
        "check_leave_one_out": compact_check(check),
        "eer": eer,
        "threshold_at_eer": threshold_at_eer,
        "threshold": threshold,
        "eer_per_voice_size": {str(n): per_n[n][0] for n in VOICE_SIZES},
        "eer_english_same_gender": en_eer,
        "pair_eer": pair_eer,
        "pair_eer_english_same_gender": pair_eer_en,
        "whole_check_at_threshold": whole,
        "timing": timing,
        "versions": versions(),
        "cpu": platform.processor() or platform.machine(),
    }
    json_path = args.out.with_suffix(".json")
    json_path.write_text(json.dumps(raw, separators=(",", ":")) + "\n")

    v = raw["versions"]
    g_min, i_max = min(g_all), max(i_all)
    lines = [
        "# Speaker check: calibration and cost",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `benchmarks/speaker_calibration.py` "
        f"({total_s:.0f} s in all, {synth_s:.0f} s of it making speech); raw scores in "
        f"`{json_path.name}`. Encoder: resemblyzer {v['resemblyzer']} (torch {v['torch']}, "
        f"librosa {v['librosa']}, webrtcvad {v['webrtcvad']}), CPU, one thread.",
        "",
        "## Result",
        "",
        f"- **Threshold: {threshold:.2f}** (`voice.speaker_check.threshold`): the middle of "
        f"the equal-error range of the check's own statistic, rounded to 2 decimals.",
        f"- **Equal error rate: {pct(eer)}** (goal {pct(GOAL_EER)} or less: "
        f"{'met' if eer <= GOAL_EER else 'NOT met'}); same-language pairs only. "
        + (
            f"The distributions do not overlap: every genuine score is at least {g_min:.3f}, "
            f"every intruder score at most {i_max:.3f}, so any threshold between has no error "
            "on this set."
            if g_min > i_max
            else f"Genuine scores go down to {g_min:.3f}, intruder scores up to {i_max:.3f}."
        ),
        f"- The whole check at {threshold:.2f} (odd clips kept out of the reference, "
        "`check_voice`): "
        + "; ".join(
            f"N={n}: {pct(whole[str(n)]['intruders_named'])} of intruders named, "
            f"{pct(whole[str(n)]['host_clips_named_beside_an_intruder'])} of the host's clips "
            f"beside one named, {pct(whole[str(n)]['clean_clips_named'])} of clips in clean "
            "voices named"
            for n in VOICE_SIZES
        )
        + ".",
        f"- **Cost: {timing['ratio_cpu_median_of_rounds']:.3f}x** resemblyzer called directly "
        f"(goal {GOAL_RATIO}x: "
        f"{'met' if timing['ratio_cpu_median_of_rounds'] <= GOAL_RATIO else 'NOT met'}); "
        f"{timing['avatar_cpu_s_per_audio_s']:.4f} s of one CPU core per second of reference "
        "audio.",
        "- Caveat: this is synthetic speech (diphone, HTS and a distilled neural voice) built "
        "from real speakers' recordings; each speaker's clips come from one model, so they "
        "agree more than recordings of a person on different days and microphones do. Real "
        "clips of one person will score lower than the genuine scores here: if a user's own "
        "clips get flagged, lower `voice.speaker_check.threshold` (the intruder scores below "
        "say how far it can go before another speaker of the same gender passes).",
        "",
        "## Material",
        "",
        f"{len(SPEAKERS)} speakers, {len(SENTENCES['en'])} different sentences each "
        f"({min(durations):.1f}-{max(durations):.1f} s per clip), every clip normalised as the "
        "voice store keeps it (mono, 22,050 Hz, PCM_16) before embedding. Festival voices are "
        "diphone/HTS renderings of recorded people (Debian packages); `heart` is the light "
        "engine's packaged voice (hibari-tts). Different speakers are paired within one "
        "language only (a change of language alone makes them easier to tell apart).",
        "",
        "| speaker | language | gender | source |",
        "|---|---|---|---|",
        *(f"| {s.id} | {s.language} | {s.gender} | {s.note} |" for s in SPEAKERS),
        "",
        "## The check's statistic",
        "",
        "A clip's score is its cosine similarity to the centroid of the voice's *other* clips "
        f"(leave-one-out). Genuine: every clip of every {' and '.join(map(str, VOICE_SIZES))}-clip "
        "subset of one speaker's clips. Intruder: each clip of each other speaker of the same "
        f"language, put into {INTRUDER_CONTEXTS} random sets of N-1 clips of the host speaker; "
        "its score, and the host clips' scores beside it (plain leave-one-out, before the check "
        "sets the odd clip aside).",
        "",
        DIST_HEADER,
        dist_row("genuine (clean voices), N=3 and 5", g_all),
        dist_row("intruder, same language", i_all),
        dist_row("intruder, English same gender", i_en),
        dist_row("host clips beside an intruder, plain leave-one-out", h_all),
        "",
        "| voices | EER | threshold there | genuine below "
        f"{threshold:.2f} | intruders at or above | host clips beside an intruder below, "
        "plain leave-one-out |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| N={n} | {pct(per_n[n][0][0])} | {per_n[n][0][1]:.3f} | {pct(per_n[n][1][0])} | "
            f"{pct(per_n[n][1][1])} | {pct(per_n[n][2][0])} |"
            for n in VOICE_SIZES
        ),
        f"| English, same gender (kal/ked, slt/heart) | {pct(en_eer[0])} | {en_eer[1]:.3f} | "
        f"{pct(error_rates(g_en, i_en, threshold)[0])} | "
        f"{pct(error_rates(g_en, i_en, threshold)[1])} | |",
        "",
        "The last column is why the check sets an odd clip aside before scoring the others: "
        "in a 3-clip voice the intruder is half of each host clip's reference and pulls it "
        "down. With the odd clip set aside (`consistency(embeddings, threshold)`), the whole "
        "check names:",
        "",
        "| voices | intruders named | English same-gender intruders named | host clips named "
        "beside an intruder | clean voices with a clip named |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| N={n} ({whole[str(n)]['intruder_voices']} with an intruder, "
            f"{whole[str(n)]['clean_voices']} clean) | {pct(whole[str(n)]['intruders_named'])} | "
            f"{pct(whole[str(n)]['english_same_gender_intruders_named'])} | "
            f"{pct(whole[str(n)]['host_clips_named_beside_an_intruder'])} | "
            f"{pct(whole[str(n)]['clean_voices_with_a_clip_named'])} |"
            for n in VOICE_SIZES
        ),
        "",
        f"Intruders per host and intruding speaker (N=3 and 5 pooled, plain score below "
        f"{threshold:.2f}):",
        "",
        "| host | intruder | median score | max score | below threshold |",
        "|---|---|---:|---:|---:|",
        *(
            f"| {host} | {other} | {statistics.median(sc):.3f} | {max(sc):.3f} | "
            f"{pct(sum(x < threshold for x in sc) / len(sc))} |"
            for (host, other), sc in sorted(pair_catch.items())
        ),
        "",
        "## Pairs of clips (the two-clip case; issue 13's figures)",
        "",
        DIST_HEADER,
        dist_row("same speaker", pair_scores_of["same_speaker"]),
        dist_row(
            "different speaker, same language",
            pair_scores_of["different_speaker_same_language"],
        ),
        dist_row(
            "different speaker, same language and gender",
            pair_scores_of["different_speaker_same_language_same_gender"],
        ),
        dist_row(
            "different speaker, English, same gender",
            pair_scores_of["different_speaker_english_same_gender"],
        ),
        dist_row("different language", pair_scores_of["different_language"]),
        "",
        f"Pair EER (same speaker vs different speaker, same language): {pct(pair_eer[0])} at "
        f"{pair_eer[1]:.3f}; English same gender: {pct(pair_eer_en[0])} at {pair_eer_en[1]:.3f}. "
        "A pair is noisier than a clip against the others' centroid, and with two clips that "
        "disagree neither is the odd one: the check reports their similarity and names a clip "
        "only from three clips up.",
        "",
        "| speakers | median | min | max |",
        "|---|---:|---:|---:|",
    ]
    per_pair: dict[tuple[str, ...], list[float]] = {}
    for group in ("same_speaker", "different_speaker_same_language"):
        for a, b, sc in pairs[group]:
            key = tuple(sorted((a.rsplit("-", 1)[0], b.rsplit("-", 1)[0])))
            per_pair.setdefault(key, []).append(sc)
    lines += [
        f"| {'/'.join(k)} | {statistics.median(sc):.3f} | {min(sc):.3f} | {max(sc):.3f} |"
        for k, sc in sorted(per_pair.items())
    ]
    lines += [
        "",
        "## Cost: embedding on one CPU core",
        "",
        f"{timing['clips']} clips ({timing['audio_s']:.1f} s of audio, kal and slt), "
        f"{timing['rounds']} alternated rounds, process pinned to one core, torch on one thread, "
        "process CPU seconds (wall beside; the machine was shared with other work). Direct: "
        "`preprocess_wav(samples, source_sr=22050)` (librosa resampling) + "
        "`VoiceEncoder.embed_utterance`; avatar: `SpeakerEncoder.embed(samples, 22050)` (soxr "
        "resampling + resemblyzer's preprocess_wav + embed_utterance). Both after a warm-up "
        "call: the first call in a process imports librosa's feature module and scipy.signal "
        "(5-15 s here), and the very first after install also compiles librosa's numba code "
        "(about 90 s on this busy machine, cached afterwards).",
        "",
        "| | CPU s per s of audio | wall s per s of audio |",
        "|---|---:|---:|",
        f"| resemblyzer directly | {timing['direct_cpu_s_per_audio_s']:.4f} | "
        f"{timing['direct_wall_s_per_audio_s']:.4f} |",
        f"| avatar SpeakerEncoder | {timing['avatar_cpu_s_per_audio_s']:.4f} | "
        f"{timing['avatar_wall_s_per_audio_s']:.4f} |",
        "",
        f"**Ratio avatar / direct: {timing['ratio_cpu_median_of_rounds']:.3f}x** (median of "
        f"per-round CPU ratios; wall ratio of medians {timing['ratio_wall_of_medians']:.3f}x; "
        f"goal {GOAL_RATIO}x). The two embeddings of each clip agree to a cosine similarity of "
        f"at least {timing['embedding_agreement_min']:.4f}.",
        "",
        "## Versions",
        "",
        *(f"- {k}: {val}" for k, val in v.items()),
        f"- machine: {raw['cpu']}, {os.cpu_count()} cores (shared with other work)",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
