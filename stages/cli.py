"""The command-line frame every stage shares: arguments, logging, and errors as one clear line."""

import argparse
import contextlib
import errno
import importlib.abc
import importlib.util
import logging
import os
import re
import resource
import sys
import tempfile
from pathlib import Path

# PIPELINE_VERBOSE=1 brings back what a stage keeps quiet by default: its detail lines and
# TensorFlow's start-up and informational lines.
VERBOSE_ENV = "PIPELINE_VERBOSE"
# TensorFlow 2.21 prints these before its logging is set up, so TF_CPP_MIN_LOG_LEVEL cannot hide them.
TENSORFLOW_STARTUP_LINE = re.compile(r"All log messages before absl::InitializeLog|\] oneDNN custom operations are on|"
                                     r"cpu_feature_guard\.cc|^To enable the following instructions")


def verbose():
    return os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0")


SEED_HELP = "the training seed (dvc.yaml passes one of params.yaml's seeds); by default the first of them"


def parse_stage_arguments(doc, argv, seed=False, **positionals):
    """Parse argv for a stage taking the named positional arguments (name=help), then, with seed=True, an
    optional training seed; set up logging."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, help_text in positionals.items():
        parser.add_argument(name, help=help_text)
    if seed:
        parser.add_argument("seed", nargs="?", type=int, help=SEED_HELP)
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if verbose() else logging.INFO, format="%(name)s: %(message)s")
    if not verbose():  # JAX logs at INFO each accelerator it looks for and does not find ("Unable to initialize")
        logging.getLogger("jax").setLevel(logging.WARNING)
    return arguments


class QuietTensorFlowImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs TensorFlow's own import, whichever module asks for it first, with its C++ start-up lines
    taken out of stderr; everything else it prints still gets through."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None:
            self.loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = module.__loader__ = self.loader
        sys.stderr.flush()
        saved_stderr = os.dup(2)
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                self.loader.exec_module(module)
            finally:
                os.dup2(saved_stderr, 2)
                os.close(saved_stderr)
                captured.seek(0)
                lines = captured.read().decode(errors="replace").splitlines(keepends=True)
                sys.stderr.write("".join(line for line in lines if not TENSORFLOW_STARTUP_LINE.search(line)))


def quiet_tensorflow_startup():
    """Unless verbose: TensorFlow's start-up lines filtered, and its informational lines off (unless
    TF_CPP_MIN_LOG_LEVEL says otherwise); its warnings and errors stay. Called once, by stages/__init__.py."""
    if verbose() or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if not any(isinstance(finder, QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlowImport())


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
