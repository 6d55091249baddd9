"""The languages a voice can be stored with: the 17 that XTTS-v2 speaks."""

from __future__ import annotations

from avatar.errors import AvatarUserError

# coqui-tts's XTTS-v2 language codes, in its own order.
XTTS_LANGUAGES: tuple[str, ...] = (
    "en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru",
    "nl", "cs", "ar", "zh-cn", "hu", "ko", "ja", "hi",
)  # fmt: skip


class UnsupportedLanguageError(AvatarUserError, ValueError):
    """A language code that XTTS-v2 does not speak."""


def normalise_language(language: str) -> str:
    """The XTTS code for `language`: case-insensitive, and `zh_cn` accepted for `zh-cn`.

    Raises UnsupportedLanguageError (listing the 17 codes) for anything else.
    """
    code = str(language).strip().lower().replace("_", "-")
    if code in XTTS_LANGUAGES:
        return code
    raise UnsupportedLanguageError(
        f"Language {language!r} is not one XTTS-v2 speaks. Use one of: "
        f"{', '.join(XTTS_LANGUAGES)} (zh_cn is accepted for zh-cn)."
    )
