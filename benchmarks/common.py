"""What every benchmark report starts with: date, machine, library versions, the exact command."""

from __future__ import annotations

import datetime
import os
import platform
import sys


def machine_report() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date": datetime.date.today().isoformat(), "machine": platform.machine(), "processor": cpu,
            "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "command": " ".join(sys.argv)}
