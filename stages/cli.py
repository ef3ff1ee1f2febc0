"""The command-line frame every stage shares: arguments, logging, and errors as one clear line."""

import argparse
import contextlib
import logging
import resource
import sys


def parse_stage_arguments(doc, argv, **positionals):
    """Parse argv for a stage taking the named positional arguments (name=help); set up logging."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, help_text in positionals.items():
        parser.add_argument(name, help=help_text)
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    return arguments


def peak_memory_mib():
    """This process's peak resident memory so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


@contextlib.contextmanager
def exit_on(prefix, *errors):
    """Turn the expected errors into `<prefix>: error: <message>` and exit status 1, without a traceback."""
    try:
        yield
    except errors as error:
        sys.exit(f"{prefix}: error: {error}")
