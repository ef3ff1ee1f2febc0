"""Run a module (or -c code) as a script and write its peak resident memory to a file when it exits.

    python -m benchmarks.peak_memory PEAK_FILE MODULE [ARGS...]
    python -m benchmarks.peak_memory PEAK_FILE -c CODE [ARGS...]

The peak is the process's own high-water mark (VmHWM in /proc/self/status, in MiB). The benchmark
cannot use the rusage of the processes it starts: Linux carries the starting process's peak across
`exec` into its children's ru_maxrss, so every child of a benchmark that has imported TensorFlow
appeared to need at least that much.
"""

import atexit
import runpy
import sys
from pathlib import Path


def high_water_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0  # not Linux: the benchmark falls back on rusage


def main():
    peak_file, target, *arguments = sys.argv[1:]
    atexit.register(lambda: Path(peak_file).write_text(f"{high_water_mib():.1f}"))
    if target == "-c":
        code, *arguments = arguments
        sys.argv = ["-c", *arguments]
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102 (the benchmark's own code)
    else:
        sys.argv = [target, *arguments]
        runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
