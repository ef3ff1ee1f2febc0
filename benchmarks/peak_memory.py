"""Run a module (or -c code) as a script and write its peak resident memory to a file when it exits.

    python -m benchmarks.peak_memory PEAK_FILE MODULE [ARGS...]
    python -m benchmarks.peak_memory PEAK_FILE -c CODE [ARGS...]

The peak is the process's own high-water mark (stages.cli.peak_memory_mib, as the train stage
reports it): Linux carries a starting process's peak across `exec` into its children's ru_maxrss.
"""

import atexit
import runpy
import sys
from pathlib import Path

from stages.cli import peak_memory_mib


def main():
    peak_file, target, *arguments = sys.argv[1:]
    atexit.register(lambda: Path(peak_file).write_text(f"{peak_memory_mib():.1f}"))
    if target == "-c":
        code, *arguments = arguments
        sys.argv = ["-c", *arguments]
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102 (the benchmark's own code)
    else:
        sys.argv = [target, *arguments]
        runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
