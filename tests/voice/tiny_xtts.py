"""A tiny, randomly initialised XTTS-v2 checkpoint, built from coqui-tts's own classes.

The released weights cannot be downloaded here (and are 1.8 GB), so the tests build a
checkpoint folder with the real layout (config.json, model.pth, vocab.json) and the real
architecture at a toy width. It goes through the very code path the released model takes:
`XttsConfig.load_json` -> `Xtts(config)` -> `load_checkpoint` -> the cloning calls ->
`inference`. Random weights prove the plumbing (loading, devices, caching, splitting,
files), not the voice quality. Recipe and constraints: shared/voice.md.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from avatar.stages.voice.languages import XTTS_LANGUAGES

SPECIAL_TOKENS = ("[STOP]", "[UNK]", "[SPACE]", "[START]")
# Characters the tokenizer knows; coqui's text cleaners lower-case and romanise the text
# (pypinyin for zh-cn, cutlet for ja), so Latin letters, digits and punctuation cover it.
_CHARACTERS = string.ascii_lowercase + string.digits + ".,!?'-:;\"()"


def write_vocab(path: Path) -> None:
    """A BPE tokenizer over single characters with no merges (the `tokenizers` format)."""
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in _CHARACTERS:
        vocab.setdefault(char, len(vocab))
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.add_special_tokens([*SPECIAL_TOKENS, *(f"[{lang}]" for lang in XTTS_LANGUAGES)])
    tokenizer.save(str(path))


def build_tiny_xtts(folder: Path, *, seed: int = 0) -> Path:
    """Write a tiny XTTS-v2 checkpoint into `folder` (created) and return it.

    The GPT is a toy (2 layers, width 64, 24 audio tokens at most); HiFi-GAN and the
    speaker encoder keep their fixed sizes, so model.pth is about 90 MB.
    """
    import torch
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts, XttsArgs

    folder.mkdir(parents=True, exist_ok=True)
    write_vocab(folder / "vocab.json")
    args = XttsArgs(
        gpt_layers=2,
        gpt_n_model_channels=64,
        gpt_n_heads=4,
        gpt_max_audio_tokens=24,
        gpt_num_audio_tokens=66,
        gpt_start_audio_token=64,
        gpt_stop_audio_token=65,
        gpt_use_perceiver_resampler=True,
        decoder_input_dim=64,  # must equal the GPT width
        d_vector_dim=512,  # fixed by the speaker encoder's projection
    )
    config = XttsConfig(model_args=args)
    torch.manual_seed(seed)
    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(folder / "vocab.json"))
    model.init_models()
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    # After init_models(): the config then holds the text-token ids from the tokenizer.
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=1), encoding="utf-8")
    return folder


def session_tiny_xtts(base_temp: Path) -> Path:
    """The test session's tiny checkpoint: built on first use, then reused by every module.

    `base_temp` is pytest's session temp dir (`tmp_path_factory.getbasetemp()`); the
    checkpoint files are written before the marker, so a half-built folder is rebuilt.
    """
    folder = base_temp / "tiny_xtts"
    marker = folder / ".complete"
    if not marker.exists():
        build_tiny_xtts(folder)
        marker.write_text("ok")
    return folder
