"""Where the project lives: relative config paths and a source checkout's state resolve from here."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
