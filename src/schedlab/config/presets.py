"""Study presets shipped with the package, and finding a study's text (no torch needed)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PRESETS = ("paper", "quick", "tuned-quick", "tuned")


def study_source(ref: str) -> tuple[str, str]:
    """(TOML text, where it came from) for a study file path or a preset name."""
    path = Path(ref)
    if path.is_dir() and ref not in PRESETS:
        raise ValueError(f"{ref} is a directory; give a study TOML file or a preset")
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise ValueError(f"study file {ref!r} does not exist; presets: {', '.join(PRESETS)}")
        try:
            return path.read_bytes().decode("utf-8"), str(path)
        except UnicodeDecodeError as err:
            raise ValueError(f"{ref}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    if ref not in PRESETS:
        raise ValueError(
            f"unknown study {ref!r}: not a file and not a preset ({', '.join(PRESETS)})"
        )
    text = resources.files("schedlab").joinpath(f"resources/presets/{ref}.toml").read_text()
    return text, f"preset {ref}"
