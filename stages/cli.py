"""The command-line frame every stage shares: arguments, logging, and errors as one clear line."""

import argparse
import atexit
import contextlib
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

# When set (by stages/benchmark.py), every stage appends its peak memory and wall time to this file.
STAGE_USAGE_LOG_ENV = "STAGE_USAGE_LOG"


def parse_stage_arguments(doc, argv, **positionals):
    """Parse argv for a stage taking the named positional arguments (name=help); set up logging."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, help_text in positionals.items():
        parser.add_argument(name, help=help_text)
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if os.environ.get(STAGE_USAGE_LOG_ENV):
        stage = "@".join([Path(sys.argv[0]).stem, *(str(getattr(arguments, name)) for name in positionals)])
        atexit.register(append_usage, Path(os.environ[STAGE_USAGE_LOG_ENV]), stage)
    return arguments


def process_seconds():
    """Wall seconds since this process started (Linux: from /proc), or None where that is unknown."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 2)


def peak_memory_mib():
    """This process's peak resident memory so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def append_usage(path, stage):
    """One JSON line: the stage, its peak resident memory and its wall time, from interpreter start to exit."""
    record = {"stage": stage, "peak_rss_mib": peak_memory_mib(), "wall_seconds": process_seconds(),
              "finished": time.time()}
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


@contextlib.contextmanager
def exit_on(prefix, *errors):
    """Turn the expected errors into `<prefix>: error: <message>` and exit status 1, without a traceback."""
    try:
        yield
    except errors as error:
        sys.exit(f"{prefix}: error: {error}")
