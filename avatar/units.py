"""Units shared by every layer. Memory is counted in MiB throughout avatar (as nvidia-smi
shows it); drivers and torch answer in bytes."""

BYTES_PER_MIB = 1024 * 1024


def bytes_to_mib(size_bytes: float) -> float:
    """MiB from bytes, as a float: NVML and torch report bytes, avatar counts MiB."""
    return size_bytes / BYTES_PER_MIB
