"""`./run bench serving`: the serving benchmark's entry point, as every benchmark folder has one.

It hands over to `run.sh` with the same arguments: the shell script installs `wrk` (Debian
package) when it is missing and then runs `bench.py`, so both ways in do the same thing.

    ./run bench serving --duration 10 --connections 1,8,32 --rows 1,100 --repeats 3
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    script = Path(__file__).resolve().parent / "run.sh"
    os.execvp("bash", ["bash", str(script), *sys.argv[1:]])
