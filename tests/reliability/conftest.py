"""Fault-injection suite: shared set-up.

The integration suite already has the helpers that build, register and serve
models (tests/integration/test_serving.py, test_tracking.py); they are imported
from there rather than copied, so the faults run against the same set-ups.
"""

from __future__ import annotations

import sys
from pathlib import Path

RELIABILITY_DIR = Path(__file__).resolve().parent
for folder in (RELIABILITY_DIR, RELIABILITY_DIR.parent / "integration"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
