"""The command-line frame every stage shares: arguments, logging, and errors as one clear line."""

import argparse
import contextlib
import errno
import logging
import resource
import sys
from pathlib import Path


def parse_stage_arguments(doc, argv, **positionals):
    """Parse argv for a stage taking the named positional arguments (name=help); set up logging."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, help_text in positionals.items():
        parser.add_argument(name, help=help_text)
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    return arguments


def peak_memory_mib():
    """This process's own peak resident memory so far, in MiB.

    On Linux, VmHWM: the process's rusage would also count the peak of the process that started it,
    which Linux carries across `exec` (a stage started by a process holding TensorFlow would report
    that process's memory). Elsewhere, rusage.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def exit_on(prefix, *errors):
    """Turn the expected errors, and a full disk, into `<prefix>: error: <message>` and exit status 1.

    Outputs are written under temporary names and renamed into place whole, so a stage that runs out
    of space leaves nothing half-written behind.
    """
    try:
        yield
    except errors as error:
        sys.exit(f"{prefix}: error: {error}")
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        where = f" while writing {error.filename}" if error.filename else ""
        sys.exit(f"{prefix}: error: no space left on the device{where} ({error.strerror}); nothing half-written "
                 "was kept: free some space and run `dvc repro` again")
