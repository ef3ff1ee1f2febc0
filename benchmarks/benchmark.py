"""Benchmark the pipeline on this machine (a user command, not a pipeline stage).

Measures, in one run: every model's training speed in our train stage against plain Keras
(`model.fit` on the same NumPy arrays, same model, batch size and epochs); XLA and mixed precision
against the defaults; the ResNet50 models' training FLOP/s against the machine's peak; what
`dvc repro` costs on top of training (nothing changed, one model's params changed, a full run); and
the peak memory of every stage. Writes reports/benchmarks.md and its JSON twin.

    python -m benchmarks.benchmark [--epochs 3] [--models a,b] [--skip-pipeline] [--output reports/benchmarks]

Run it on an idle machine, from the repository root, after `dvc repro` has made data/processed
(the pipeline part copies the project into a temporary git repository and runs it from scratch
there, so LOCAL_DATA_DIR / LOCAL_WEIGHTS_DIR apply as for `dvc repro`).
"""

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from stages.config import LOCAL_DATA_ENV, LOCAL_WEIGHTS_ENV, PARAMS_FILE, PROCESSED_DIR, RUNS_DIR, TRAIN_REPORTS_DIR, load_params, model_spec
from stages.files import staged_path, write_json

log = logging.getLogger("benchmark")

REPO_ROOT = Path(__file__).resolve().parents[1]
# FP32 FLOPs one core can start per cycle: two 256-bit FMA pipes x 8 lanes x 2 (multiply + add),
# as on AMD Zen 2-4 and Intel cores with AVX2 (Zen 4 runs AVX-512 as two 256-bit halves).
AVX2_FMA_FLOPS_PER_CYCLE = 32
MATMUL_SIZE = 2048
MATMUL_REPEATS = 20


def run_measured(command, cwd, env=None):
    """Run a command; return (exit status, wall seconds, peak resident MiB of the process tree's largest member)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({process.returncode}):\n{output[-4000:]}")
    return seconds, round(usage.ru_maxrss / 1024, 1), output


def python_env():
    """This environment, with the project importable, the local-copy folders made absolute (the runs
    happen in other folders), and this interpreter's folder first on PATH: dvc.yaml's commands run
    `python`, which must be this one even when its virtual environment is not activated."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT),
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    for name in (LOCAL_DATA_ENV, LOCAL_WEIGHTS_ENV):
        if env.get(name):
            env[name] = str(Path(env[name]).resolve())
    return env


# ---------------------------------------------------------------- the machine

def machine_description():
    """CPU, cores, memory, GPUs and library versions, as this process sees them."""
    import keras
    import tensorflow as tf

    cpu_model, mhz = platform.processor() or "unknown", None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu_model = value.strip()
            elif key.strip() == "cpu MHz" and mhz is None:
                mhz = float(value)
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpus = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]
    return {"cpu": cpu_model, "cores": len(os.sched_getaffinity(0)), "cpu_mhz": mhz,
            "memory_gib": round(memory_gib, 1), "gpus": gpus, "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "platform": platform.platform()}


def measured_matmul_flops():
    """FP32 FLOP/s of a large matrix product on the default device: the best this machine does in practice."""
    import tensorflow as tf

    a = tf.random.normal((MATMUL_SIZE, MATMUL_SIZE))
    b = tf.random.normal((MATMUL_SIZE, MATMUL_SIZE))
    tf.matmul(a, b).numpy()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(MATMUL_REPEATS):
            result = tf.matmul(a, b)
        result.numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * MATMUL_SIZE**3 * MATMUL_REPEATS / best


def machine_peak(machine):
    """Peak FP32 FLOP/s: on a GPU the measured matmul rate; on the CPU also cores x clock x FLOPs per cycle."""
    peak = {"measured_matmul_flops": measured_matmul_flops(), "matmul_size": MATMUL_SIZE}
    if not machine["gpus"] and machine["cpu_mhz"] and "avx2" in Path("/proc/cpuinfo").read_text():
        peak["theoretical_flops"] = machine["cores"] * machine["cpu_mhz"] * 1e6 * AVX2_FMA_FLOPS_PER_CYCLE
        peak["theoretical_basis"] = (f"{machine['cores']} cores x {machine['cpu_mhz']:.0f} MHz x "
                                     f"{AVX2_FMA_FLOPS_PER_CYCLE} FP32 FLOPs/cycle (2 x 256-bit FMA)")
    return peak


def forward_flops_per_image(spec, input_shape):
    """FLOPs of one image's forward pass, counted by TensorFlow's profiler on the inference graph."""
    import tensorflow as tf

    from stages.train import build_model

    model = build_model(spec, input_shape)
    function = tf.function(lambda images: model(images, training=False))
    graph = function.get_concrete_function(tf.TensorSpec((1, *input_shape), tf.float32)).graph
    profiler = tf.compat.v1.profiler
    options = profiler.ProfileOptionBuilder(profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    return int(profiler.profile(graph, options=options).total_float_ops)


# ---------------------------------------------------------------- training speed

def scratch_project(directory, params, model, epochs, **train_overrides):
    """A folder where the train stage runs `model` for `epochs` epochs (one phase) on the real processed data."""
    directory.mkdir(parents=True)
    (directory / "data").mkdir()
    os.symlink(Path(PROCESSED_DIR).resolve(), directory / PROCESSED_DIR)
    params = json.loads(json.dumps(params))
    block = params["models"][model].setdefault("train", {})
    block.update(epochs=epochs, fine_tune=None, early_stopping_patience=None, **train_overrides)
    (directory / PARAMS_FILE).write_text(yaml.safe_dump(params, sort_keys=False))
    return directory


def steady_images_per_second(train_images, epoch_seconds):
    """Images/s over the epochs after the first (which also traces and compiles), by the median epoch."""
    steady = epoch_seconds[1:] or epoch_seconds
    return train_images / float(np.median(steady))


def stage_speed(directory, model):
    """Our train stage, as dvc runs it: images/s from its report, and the process's peak memory."""
    seconds, peak_mib, _ = run_measured([sys.executable, "-m", "stages.train", model], directory, python_env())
    report = {**json.loads((directory / TRAIN_REPORTS_DIR / f"{model}.json").read_text()),
              **json.loads((directory / RUNS_DIR / f"{model}.json").read_text())}
    return {"images_per_second": report["images_per_second"], "fit_seconds": report["wall_time_seconds"],
            "steady_images_per_second": round(steady_images_per_second(report["train_images"],
                                                                       report["epoch_seconds"]), 1),
            "epoch_seconds": report["epoch_seconds"], "process_seconds": round(seconds, 1), "peak_rss_mib": peak_mib,
            "training_peak_rss_mib": report["peak_memory_mib"], "train_images": report["train_images"],
            "device": report["device"], "jit_compile": report["jit_compile"],
            "mixed_precision": report["mixed_precision"]}


def keras_baseline(model_name):
    """Plain Keras on the same data, model, batch size and epochs: arrays in memory, `model.fit`, nothing else.

    Runs in the scratch folder as its own process (python -m benchmarks.benchmark --baseline <model>).
    """
    import keras

    from stages.data import load_split
    from stages.train import build_model, compile_model, configure_runtime, validation_split

    spec = model_spec(load_params(), model_name)
    train = spec.train
    _, runtime = configure_runtime(train, spec.seed)
    images, labels = load_split(spec.dataset, "train")
    train_indices, validation_indices = validation_split(labels, train["validation_fraction"], spec.seed)
    x, y = images[train_indices], labels[train_indices]
    validation = (images[validation_indices], labels[validation_indices])
    model = build_model(spec, images.shape[1:])
    compile_model(model, train["optimizer"], train["learning_rate"], spec.dataset.num_classes, runtime["jit_compile"])
    epoch_ends = []
    timer = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epoch_ends.append(time.perf_counter()))
    started = time.perf_counter()
    model.fit(x, y, validation_data=validation, batch_size=train["batch_size"], epochs=train["epochs"],
              callbacks=[timer], verbose=2)
    fit_seconds = time.perf_counter() - started
    epoch_seconds = list(np.diff([started, *epoch_ends]))
    write_json(Path("baseline.json"), {
        "images_per_second": round(len(x) * train["epochs"] / fit_seconds, 1), "fit_seconds": round(fit_seconds, 2),
        "steady_images_per_second": round(steady_images_per_second(len(x), epoch_seconds), 1),
        "epoch_seconds": [round(value, 4) for value in epoch_seconds]})


def baseline_speed(directory, model):
    seconds, peak_mib, _ = run_measured([sys.executable, "-m", "benchmarks.benchmark", "--baseline", model],
                                        directory, python_env())
    return {**json.loads((directory / "baseline.json").read_text()), "process_seconds": round(seconds, 1),
            "peak_rss_mib": peak_mib}


def flops_in_subprocess(model, scratch):
    code = ("import json, sys; from benchmarks import benchmark; from stages.config import load_params, model_spec; "
            "from stages.data import load_split; spec = model_spec(load_params(), sys.argv[1]); "
            "shape = load_split(spec.dataset, 'test', mmap_mode='r')[0].shape[1:]; "
            "print(json.dumps(benchmark.forward_flops_per_image(spec, shape)))")
    _, _, output = run_measured([sys.executable, "-c", code, model], scratch, python_env())
    return int(output.strip().splitlines()[-1])


def training_speed(params, models, epochs, variants, variant_models, variant_epochs, workdir):
    """Per model: our stage, the Keras baseline, and the XLA / mixed-precision variants of our stage."""
    results = {}
    for model in models:
        log.info("speed: %s (%d epochs)", model, epochs)
        base = scratch_project(workdir / model, params, model, epochs)
        entry = {"batch_size": model_spec(params, model).train["batch_size"], "ours": stage_speed(base, model),
                 "keras": baseline_speed(base, model), "variants": {}}
        entry["ratio"] = round(entry["ours"]["images_per_second"] / entry["keras"]["images_per_second"], 3)
        entry["steady_ratio"] = round(entry["ours"]["steady_images_per_second"]
                                      / entry["keras"]["steady_images_per_second"], 3)
        for variant, overrides in variants.items() if model in variant_models else ():
            folder = scratch_project(workdir / f"{model}-{variant}", params, model, variant_epochs, **overrides)
            entry["variants"][variant] = stage_speed(folder, model)
        spec = model_spec(params, model)
        if spec.builder == "resnet50" or spec.network.get("backbone") == "ResNet50":
            entry["forward_flops_per_image"] = flops_in_subprocess(model, base)
        results[model] = entry
    return results


def achieved_flops(entry, validation_images):
    """Training FLOP/s: 3 forward passes' worth per training image (forward, and backward at about twice
    the forward), one per validation image, over the steady epochs."""
    forward = entry["forward_flops_per_image"]
    ours = entry["ours"]
    per_epoch = (3 * ours["train_images"] + validation_images) * forward
    return per_epoch / float(np.median(ours["epoch_seconds"][1:] or ours["epoch_seconds"]))


# ---------------------------------------------------------------- the pipeline

def copy_project(source_root, destination):
    """The working tree's tracked files (not dvc.lock: a scratch run starts from nothing) in a new git repository."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=source_root, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = source_root / name
        if name == "dvc.lock" or not source.is_file():
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    quiet_git = ["git", "-c", "user.name=benchmark", "-c", "user.email=benchmark@localhost"]
    subprocess.run([*quiet_git, "init", "-q"], cwd=destination, check=True)
    subprocess.run([*quiet_git, "add", "-A"], cwd=destination, check=True)
    subprocess.run([*quiet_git, "commit", "-qm", "benchmark copy"], cwd=destination, check=True)


def repro(directory, env, *args):
    """`dvc repro *args` in the copy: (wall seconds, peak MiB of its largest process, stages it ran)."""
    env = {key: value for key, value in env.items() if key != "PYTHONPATH"}  # the copy runs its own stages
    seconds, peak_mib, output = run_measured([sys.executable, "-m", "dvc", "repro", *args], directory, env)
    ran = [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]
    return round(seconds, 1), peak_mib, ran


def training_seconds(directory, models):
    return {model: json.loads((directory / RUNS_DIR / f"{model}.json").read_text())["wall_time_seconds"]
            for model in models}


def pipeline_overhead(source_root, workdir, changed_model, env=None):
    """dvc repro from scratch, with nothing changed, and after one model's params changed."""
    env = env or python_env()
    project = workdir / "pipeline"
    project.mkdir()
    copy_project(source_root, project)
    models = list(load_params(project / PARAMS_FILE)["models"])
    log.info("pipeline: full dvc repro in %s", project)
    full_seconds, _, full_ran = repro(project, env)
    full_training = training_seconds(project, models)
    log.info("pipeline: dvc repro with nothing changed")
    noop_seconds, _, noop_ran = repro(project, env)
    # Each stage but training once more on its own, for its peak memory (train's is in the speed part).
    stages = []
    for stage in full_ran:
        if not stage.startswith("train@"):
            log.info("pipeline: %s again, for its memory", stage)
            seconds, peak_mib, _ = repro(project, env, "--force", "--single-item", stage)
            stages.append({"stage": stage, "peak_rss_mib": peak_mib, "wall_seconds": seconds})
    params = yaml.safe_load((project / PARAMS_FILE).read_text())
    changed = params["models"][changed_model].setdefault("train", {})
    changed["learning_rate"] = changed.get("learning_rate", params["train"]["learning_rate"]) / 2
    (project / PARAMS_FILE).write_text(yaml.safe_dump(params, sort_keys=False))
    log.info("pipeline: dvc repro after halving %s's learning rate", changed_model)
    one_seconds, _, one_ran = repro(project, env)
    one_training = training_seconds(project, [changed_model])[changed_model]
    return {
        "full": {"seconds": full_seconds, "stages_run": len(full_ran), "training_seconds": full_training,
                 "training_seconds_total": round(sum(full_training.values()), 1)},
        "no_change": {"seconds": noop_seconds, "stages_run": len(noop_ran)},
        "one_model": {"model": changed_model, "change": "learning_rate halved", "seconds": one_seconds,
                      "stages_run": one_ran, "training_seconds": one_training},
        "stages": stages,
    }


def tensorflow_import_rss():
    """Peak MiB of a process that only imports TensorFlow and Keras: the floor under every stage's memory."""
    _, peak_mib, _ = run_measured([sys.executable, "-c", "import tensorflow, keras"], REPO_ROOT, python_env())
    return peak_mib


# ---------------------------------------------------------------- the report

def directory_mib(path):
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 1)


def markdown_table(rows):
    """A list of {column: value} rows as a Markdown table (numbers as given, already rounded)."""
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def speed_rows(speed):
    for model, entry in speed.items():
        ours, plain = entry["ours"], entry["keras"]
        yield {"model": model, "batch": entry["batch_size"],
               "ours img/s (whole run)": round(ours["images_per_second"]),
               "Keras img/s (whole run)": round(plain["images_per_second"]), "ratio": f"{entry['ratio']:.2f}",
               "ours img/s (steady)": round(ours["steady_images_per_second"]),
               "Keras img/s (steady)": round(plain["steady_images_per_second"]),
               "steady ratio": f"{entry['steady_ratio']:.2f}",
               "ours peak MiB (training / whole stage)":
                   f"{ours['training_peak_rss_mib']:.0f} / {ours['peak_rss_mib']:.0f}",
               "Keras peak MiB": round(plain["peak_rss_mib"])}


def variant_rows(speed):
    for model, entry in speed.items():
        default = entry["ours"]["steady_images_per_second"]
        row = {"model": model, "default img/s": round(default)}
        for variant, run in sorted(entry["variants"].items()):
            row[f"{variant} img/s"] = round(run["steady_images_per_second"])
            row[f"{variant} ratio"] = f"{run['steady_images_per_second'] / default:.2f}"
        yield row


def flops_rows(speed, peak):
    for model, entry in speed.items():
        if "achieved_flops" not in entry:
            continue
        achieved = entry["achieved_flops"]
        row = {"model": model, "forward GFLOPs/image": f"{entry['forward_flops_per_image'] / 1e9:.2f}",
               "achieved GFLOP/s": f"{achieved / 1e9:.1f}",
               "measured peak GFLOP/s": f"{peak['measured_matmul_flops'] / 1e9:.1f}",
               "% of measured peak": f"{100 * achieved / peak['measured_matmul_flops']:.0f}%"}
        if "theoretical_flops" in peak:
            row["theoretical peak GFLOP/s"] = f"{peak['theoretical_flops'] / 1e9:.0f}"
            row["% of theoretical"] = f"{100 * achieved / peak['theoretical_flops']:.0f}%"
        yield row


def overhead_rows(pipeline):
    full, noop, one = pipeline["full"], pipeline["no_change"], pipeline["one_model"]
    for run, seconds, stages, training in (
            ("full pipeline", full["seconds"], full["stages_run"], full["training_seconds_total"]),
            ("nothing changed", noop["seconds"], noop["stages_run"], 0.0),
            (f"{one['model']}: {one['change']}", one["seconds"],
             f"{len(one['stages_run'])} ({', '.join(one['stages_run'])})", one["training_seconds"])):
        yield {"run": run, "dvc repro wall s": f"{seconds:.1f}", "stages run": stages,
               "pure training s": f"{training:.1f}", "overhead s": f"{seconds - training:.1f}",
               "overhead % of wall": f"{100 * (1 - training / seconds):.0f}%"}


def memory_rows(pipeline, sizes):
    for stage in pipeline["stages"]:
        data_mib, model_mib = sizes.get(stage["stage"], ("", ""))
        yield {"stage": stage["stage"], "peak MiB": round(stage["peak_rss_mib"]),
               "wall s (dvc repro -s)": stage["wall_seconds"], "its data MiB": data_mib,
               "its model file MiB": model_mib}


def markdown(results):
    machine, speed, peak = results["machine"], results["speed"], results["peak"]
    device = ", ".join(machine["gpus"]) or f"CPU only: {machine['cpu']}, {machine['cores']} cores"
    lines = [
        "# Benchmarks", "",
        f"Written by `python -m benchmarks.benchmark` on {results['date']} at commit {results['commit']}.", "",
        f"**Machine:** {device}; {machine['memory_gib']} GiB memory; Python {machine['python']}, TensorFlow "
        f"{machine['tensorflow']}, Keras {machine['keras']}.", "",
        "## Training speed: our train stage against plain Keras", "",
        f"Each model trained for {results['epochs']} epochs (first phase only, no early stopping) on its real "
        "processed training split, in fresh processes: by our train stage (tf.data batches gathered from the "
        "split, per-epoch checkpoint for resuming, dvclive curves) and by plain Keras (`model.fit` on the same "
        "NumPy arrays, same builder, compile settings, batch size, validation split and epochs). *Whole run* "
        "counts every epoch including the first (graph tracing); *steady* uses the median of the later epochs. "
        "Ratio = ours / Keras: above 1 means our stage is faster. Peak memory: resident memory at its highest, "
        "in the stage until its reports are written (*training*) and in the whole process (*whole stage*); "
        "plain Keras neither saves nor checkpoints.", "",
        markdown_table(list(speed_rows(speed)))]
    if any(entry["variants"] for entry in speed.values()):
        lines += ["", "## XLA and mixed precision", "",
                  f"Our train stage again, {results['variant_epochs']} epochs, with `jit_compile: true` or "
                  "`mixed_precision: true` (steady images/s, and the ratio to the default settings above).", "",
                  markdown_table(list(variant_rows(speed)))]
    flops = list(flops_rows(speed, peak))
    if flops:
        lines += ["", "## ResNet50: achieved training FLOP/s against the machine's peak", "",
                  "FLOPs per image: TensorFlow's profiler (`float_operation`) on the model's inference graph for "
                  "one image (a multiply-add counts 2); a training image costs about 3 of them (forward, and a "
                  "backward pass of about twice the forward), a validation image 1. Achieved = those FLOPs per "
                  f"epoch / the median steady epoch time. Measured peak: the best of 3 runs of {MATMUL_REPEATS} "
                  f"{peak['matmul_size']}x{peak['matmul_size']} FP32 matrix products (`tf.matmul`)."
                  + (f" Theoretical peak: {peak['theoretical_basis']}." if "theoretical_flops" in peak else ""), "",
                  markdown_table(flops)]
    pipeline = results.get("pipeline")
    if pipeline:
        lines += ["", "## What dvc repro costs on top of training", "",
                  "In a temporary git copy of the project (params.yaml as committed), from an empty DVC cache. "
                  "Pure training = the `fit` time each train stage records (`wall_time_seconds` in "
                  "`reports/runs/`). The overhead is everything else: DVC's own work, starting Python and "
                  "importing TensorFlow in each stage process, and the download, preprocess, evaluate and compare "
                  "stages.", "",
                  markdown_table(list(overhead_rows(pipeline))), "",
                  "## Peak memory of every stage", "",
                  "Each stage but training run once more on its own (`dvc repro --force --single-item`), measured "
                  "as the largest process's peak resident memory (`wait4`); the train stages' peaks are in the "
                  f"speed table. A process that only imports TensorFlow and Keras peaks at "
                  f"{results['tensorflow_import_rss_mib']:.0f} MiB.", "",
                  markdown_table(list(memory_rows(pipeline, results["sizes"])))]
    lines += ["", "Raw figures: `benchmarks.json` beside this file.", ""]
    return "\n".join(lines)


def stage_sizes(pipeline_dir, params):
    """(data MiB, model MiB) per stage name, for reading the memory table."""
    sizes = {}
    for name in params["datasets"]:
        sizes[f"download@{name}"] = (directory_mib(pipeline_dir / "data/raw" / name), "")
        sizes[f"preprocess@{name}"] = (directory_mib(pipeline_dir / "data/processed" / name), "")
    for name, block in params["models"].items():
        data = directory_mib(pipeline_dir / "data/processed" / block["dataset"] / "train")
        model_file = pipeline_dir / "models" / f"{name}.keras"
        model_mib = directory_mib(model_file) if model_file.exists() else ""
        sizes[f"train@{name}"] = (data, model_mib)
        sizes[f"evaluate@{name}"] = (directory_mib(pipeline_dir / "data/processed" / block["dataset"] / "test"),
                                     model_mib)
    return sizes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per training-speed run (default 3)")
    parser.add_argument("--models", help="comma-separated models to time (default: all in params.yaml)")
    parser.add_argument("--variant-models", help="comma-separated models to time with XLA and with mixed precision "
                        "(default: the same as --models; an empty string skips them)")
    parser.add_argument("--variant-epochs", type=int, default=2, help="epochs per XLA / mixed-precision run (default 2)")
    parser.add_argument("--skip-pipeline", action="store_true", help="skip the dvc repro runs and the stage memory")
    parser.add_argument("--changed-model", help="the model whose learning rate the pipeline part halves "
                        "(in its copy only) to time a one-model re-run (default: the first in params.yaml)")
    parser.add_argument("--output", default="reports/benchmarks", help="report path without suffix")
    parser.add_argument("--baseline", help=argparse.SUPPRESS)  # internal: the plain-Keras run of one model
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.baseline:
        keras_baseline(args.baseline)
        return
    params = load_params()
    models = args.models.split(",") if args.models else list(params["models"])
    for model in models:
        model_spec(params, model)  # unknown names fail here, before anything runs
    if not all((Path(PROCESSED_DIR) / model_spec(params, m).dataset.name / "train").is_dir() for m in models):
        sys.exit("benchmark: error: data/processed is incomplete: run `dvc repro` first")
    variant_models = models if args.variant_models is None else [m for m in args.variant_models.split(",") if m]
    for model in variant_models:
        model_spec(params, model)
    variants = {"xla": {"jit_compile": True}, "mixed_precision": {"mixed_precision": True}}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    results = {"date": time.strftime("%Y-%m-%d"), "commit": commit, "epochs": args.epochs,
               "variant_epochs": args.variant_epochs,
               "machine": machine_description()}
    results["peak"] = machine_peak(results["machine"])
    with tempfile.TemporaryDirectory(prefix="benchmark-") as workdir:
        workdir = Path(workdir)
        results["speed"] = training_speed(params, models, args.epochs, variants, variant_models, args.variant_epochs,
                                          workdir)
        for model, entry in results["speed"].items():
            if "forward_flops_per_image" in entry:
                report_path = workdir / model / TRAIN_REPORTS_DIR / f"{model}.json"
                validation_images = json.loads(report_path.read_text())["validation_images"]
                entry["achieved_flops"] = achieved_flops(entry, validation_images)
        results["tensorflow_import_rss_mib"] = tensorflow_import_rss()
        output = Path(args.output)
        write_report(output, results)  # the speed part stays, should the pipeline part fail
        if not args.skip_pipeline:
            results["pipeline"] = pipeline_overhead(REPO_ROOT, workdir, args.changed_model or models[0])
            results["sizes"] = stage_sizes(workdir / "pipeline", params)
            write_report(output, results)


def write_report(output, results):
    write_json(output.with_suffix(".json"), results)
    with staged_path(output.with_suffix(".md")) as temporary:
        temporary.write_text(markdown(results), encoding="utf-8")
    log.info("wrote %s.md and %s.json (%s)", output, output,
             "with the pipeline part" if "pipeline" in results else "training speed")


if __name__ == "__main__":
    main()
