"""Exception types. `AvatarUserError` messages are shown to users as they are:
one paragraph naming the key, value or file, what is allowed, and how to fix it."""

from __future__ import annotations

from pathlib import Path


class AvatarUserError(Exception):
    """Bad input from the user (a value, a file, an environment variable).

    The CLI prints the message and exits with status 1, without a traceback.
    """


class ConfigValueError(AvatarUserError, ValueError):
    """A composed config value is outside what avatar accepts (a range, a missing key).

    `key` names the offending config key where there is one, so the caller, which
    knows the files the config was composed from, can say which file set it.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    def set_in(self, origin: Path | None) -> ConfigValueError:
        """The same error, saying where the value was set (a file); itself if unknown."""
        if origin is None:
            return self
        return ConfigValueError(f"{self} The value is set in {origin}.", key=self.key)


class ConfigFileError(AvatarUserError):
    """A config or profile file is missing, unreadable, or not valid YAML."""


class ProfileError(AvatarUserError):
    """A profile name (e.g. from AVATAR_PROFILE) or profile file is not usable."""


class GPUSelectionError(AvatarUserError):
    """gpu_index names a GPU that is not visible to this process."""
