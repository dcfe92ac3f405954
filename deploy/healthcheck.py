"""Container healthcheck: exit 0 when a URL answers 2xx, else 1.

The slim image has no curl; the standard library is enough and starts in tens
of milliseconds, unlike an `airflow` CLI call.
Usage: python deploy/healthcheck.py http://localhost:8080/api/v2/monitor/health
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: healthcheck.py URL", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(argv[1], timeout=5) as response:
            status = int(response.status)
    except (urllib.error.URLError, OSError) as exc:
        print(f"{argv[1]}: {exc}", file=sys.stderr)
        return 1
    return 0 if 200 <= status < 300 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
