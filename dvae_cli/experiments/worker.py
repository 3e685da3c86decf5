"""A worker process of `dvae reproduce --workers N`: trains (or resumes, or skips) one run.

Reads one JSON job on stdin, {"config": TrainConfig.to_dict(), "folder": ..., "threads": T}, and
brings the folder to its epochs (runners.ensure_trained). Prints the status on stdout and exits 0;
a failed run (NaN, bad settings) prints its message on stderr and exits 1; a folder another process
is writing exits 75 (the driver tries it again later); a stop signal keeps the last complete epoch
and exits 128 + its number. Progress lines go to stderr (the driver's log of the run).

Owns: the worker's protocol with the driver (runners.Workers). Must not: be imported by the library.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ..errors import DVAEError
from ..interrupts import Interrupted, exit_code, handle_stop_signals
from ..progress import Plain
from ..runlock import FolderInUse
from ..train import TrainConfig
from .runners import EXIT_BUSY, EXIT_FAILED, ensure_trained


def main() -> int:
    handle_stop_signals()
    try:
        job = json.loads(sys.stdin.read())
        torch.set_num_threads(job["threads"])
        status = ensure_trained(TrainConfig.from_dict(job["config"]), Path(job["folder"]), Plain())
    except Interrupted as e:
        print(f"interrupted ({e})", file=sys.stderr)
        return exit_code(e)
    except FolderInUse as e:
        print(e, file=sys.stderr)
        return EXIT_BUSY
    except DVAEError as e:
        print(e, file=sys.stderr)
        return EXIT_FAILED
    print(status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
