"""Where things are in the repository, so test files can move without path arithmetic."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
STATIC = SRC / "ferrymq" / "dashboard" / "static"
DATA = Path(__file__).resolve().parent / "data"  # shared test data (an EMQX 4.4 export)
ARTIFACTS = ROOT / "tests" / "artifacts"  # git-ignored output, such as screenshots
