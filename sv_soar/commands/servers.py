"""What the two server commands (`serve-model`, `serve-students`) share: argparse's byte-size type, the port
file a caller waits for, and SIGTERM handled as Ctrl-C."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path


def byte_size(text: str) -> int:
    """'1048576', '512KiB', '1MiB', '1 MB' -> bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]i?B)?\s*", text, flags=re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1048576, 512KiB, 1MiB)")
    unit = (match.group(2) or "B")[0].upper()
    return int(match.group(1)) * {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit]


def write_port_file(path: Path, port: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)  # readers never see a half-written file


def interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM shuts down the same way Ctrl-C does
