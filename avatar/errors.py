"""Exception types. `AvatarUserError` messages are shown to users as they are:
one paragraph naming the key, value or file, what is allowed, and how to fix it."""


class AvatarUserError(Exception):
    """Bad input from the user (a value, a file, an environment variable).

    The CLI prints the message and exits with status 1, without a traceback.
    """


class ConfigValueError(AvatarUserError, ValueError):
    """A composed config value is outside what avatar accepts (a range, a missing key)."""


class ConfigFileError(AvatarUserError):
    """A config or profile file is missing, unreadable, or not valid YAML."""


class ProfileError(AvatarUserError):
    """A profile name (e.g. from AVATAR_PROFILE) or profile file is not usable."""


class GPUSelectionError(AvatarUserError):
    """gpu_index names a GPU that is not visible to this process."""
