"""Benchmark the pipeline on this machine (a user command, not a pipeline stage).

Measures, by part: every model's training speed in our train stage against plain Keras (`model.fit`
on the same images in memory, same model, batch size and epochs) and the ResNet50 models' training
FLOP/s against the machine's peak (speed); XLA and mixed precision against the defaults (variants);
what `dvc repro` costs on top of training and every stage's peak memory (pipeline); download,
preprocess, train and evaluate on generated datasets 1x and 10x the size of SMILEsmileD (scale);
two queued experiments in parallel against one after the other (queue); a `dvc repro` with nothing
to do (noop). Writes reports/benchmarks.md and its JSON twin, keeping the figures of parts not
measured this time, each with the commit and date it was measured at, and shows the GPU figures of
benchmarks.backend_speed (reports/benchmarks_gpu.json) when there are any.

    python -m benchmarks.benchmark [--parts speed,variants,pipeline,scale,queue,noop] [--epochs 3]
        [--repeats 2] [--models a,b] [--variant-models a,b] [--scale-factors 1,10] [--output reports/benchmarks]

Run it on an idle machine, from the repository root, after `dvc repro` (speed and variants read
data/processed; queue and noop need the pipeline up to date and committed). The pipeline part copies
the project into a temporary git repository and runs it from scratch there, and the scale part
generates its datasets from LOCAL_DATA_DIR, so LOCAL_DATA_DIR / LOCAL_WEIGHTS_DIR apply as for
`dvc repro`.
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

from stages.config import (
    DATA_REPORTS_DIR,
    LOCAL_DATA_ENV,
    LOCAL_WEIGHTS_ENV,
    METRICS_DIR,
    PARAMS_FILE,
    PROCESSED_DIR,
    RUNS_DIR,
    TRAIN_REPORTS_DIR,
    dataset_spec,
    load_params,
    model_spec,
)
from benchmarks.backend_speed import VARIANTS
from stages.files import staged_path, write_json

log = logging.getLogger("benchmark")

REPO_ROOT = Path(__file__).resolve().parents[1]
# FP32 FLOPs one core can start per cycle: two 256-bit FMA pipes x 8 lanes x 2 (multiply + add),
# as on AMD Zen 2-4 and Intel cores with AVX2 (Zen 4 runs AVX-512 as two 256-bit halves).
AVX2_FMA_FLOPS_PER_CYCLE = 32
MATMUL_SIZE = 2048
MATMUL_REPEATS = 20


def run_measured(command, cwd, env=None):
    """Run a command; return (wall seconds, peak resident MiB, output).

    A Python command (`python -m module` or `python -c code`, DVC's own excepted) runs under
    benchmarks.peak_memory, which reports the process's own peak; any other gives its rusage.
    """
    with tempfile.TemporaryDirectory(prefix="peak-") as scratch:
        peak_file = Path(scratch) / "peak"
        if command[0] == sys.executable and command[1] in ("-m", "-c") and command[2] != "dvc":
            command = [sys.executable, "-m", "benchmarks.peak_memory", str(peak_file),
                       *([] if command[1] == "-m" else ["-c"]), *command[2:]]
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, command))} failed ({process.returncode}):\n{output[-4000:]}")
        peak = float(peak_file.read_text()) if peak_file.is_file() else 0.0
    return seconds, round(peak or usage.ru_maxrss / 1024, 1), output


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
    """Plain Keras on the same data, model, batch size, class weights and epochs: arrays in memory,
    `model.fit`, nothing else.

    Runs in the scratch folder as its own process (python -m benchmarks.benchmark --baseline <model>).
    """
    import keras

    from stages.data import load_split
    from stages.train import balanced_class_weight, build_model, compile_model, configure_runtime, validation_split

    spec = model_spec(load_params(), model_name)
    train = spec.train
    _, runtime = configure_runtime(train, spec.seed)
    images, labels = load_split(spec.dataset, "train")
    train_indices, validation_indices = validation_split(labels, train["validation_fraction"], spec.seed)
    x, y = images[train_indices], labels[train_indices]
    validation = (images[validation_indices], labels[validation_indices])
    class_weight = balanced_class_weight(y) if train["class_weight"] == "balanced" else None
    model = build_model(spec, images.shape[1:])
    compile_model(model, train["optimizer"], train["learning_rate"], spec.dataset.num_classes, runtime["jit_compile"])
    epoch_ends = []
    timer = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epoch_ends.append(time.perf_counter()))
    started = time.perf_counter()
    model.fit(x, y, validation_data=validation, batch_size=train["batch_size"], epochs=train["epochs"],
              class_weight=class_weight, callbacks=[timer], verbose=2)
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
            "shape = load_split(spec.dataset, 'test')[0].shape[1:]; "
            "print(json.dumps(benchmark.forward_flops_per_image(spec, shape)))")
    _, _, output = run_measured([sys.executable, "-c", code, model], scratch, python_env())
    return int(output.strip().splitlines()[-1])


def run_order(repeats):
    """Which side runs first in each repeat: ours, then Keras, then the other way round, and so on, so
    that a machine slowing down or speeding up during the benchmark weighs on both sides alike."""
    return [("ours", "keras") if repeat % 2 == 0 else ("keras", "ours") for repeat in range(repeats)]


def summarize_runs(runs):
    """One side's repeated runs as one entry: the median speeds, the highest peaks, and every run."""
    summary = {**runs[0], "runs": runs}
    for key in ("images_per_second", "steady_images_per_second", "fit_seconds", "process_seconds"):
        summary[key] = round(float(np.median([run[key] for run in runs])), 1)
    for key in ("peak_rss_mib", "training_peak_rss_mib"):
        if key in runs[0]:
            summary[key] = max(run[key] for run in runs)
    return summary


def compare_sides(ours_runs, keras_runs):
    """Ratios ours / Keras of the median speeds, and the range of the ratios of each repeat's pair."""
    ours, keras = summarize_runs(ours_runs), summarize_runs(keras_runs)
    pairs = [mine["images_per_second"] / theirs["images_per_second"] for mine, theirs in zip(ours_runs, keras_runs)]
    return {"ours": ours, "keras": keras,
            "ratio": round(ours["images_per_second"] / keras["images_per_second"], 3),
            "steady_ratio": round(ours["steady_images_per_second"] / keras["steady_images_per_second"], 3),
            "ratio_range": [round(min(pairs), 3), round(max(pairs), 3)]}


def training_speed(params, models, epochs, repeats, variants, variant_models, variant_epochs, workdir):
    """Per model: our stage and the Keras baseline, `repeats` times each, alternating; and the XLA /
    mixed-precision variants of our stage."""
    results = {}
    for model in models:
        runs = {"ours": [], "keras": []}
        for repeat, order in enumerate(run_order(repeats)):
            log.info("speed: %s (%d epochs), repeat %d of %d", model, epochs, repeat + 1, repeats)
            base = scratch_project(workdir / model / f"repeat-{repeat + 1}", params, model, epochs)
            for side in order:
                runs[side].append(stage_speed(base, model) if side == "ours" else baseline_speed(base, model))
        entry = {"batch_size": model_spec(params, model).train["batch_size"], "repeats": repeats,
                 **compare_sides(runs["ours"], runs["keras"]), "variants": {}}
        for variant, overrides in variants.items() if model in variant_models else ():
            folder = scratch_project(workdir / f"{model}-{variant}", params, model, variant_epochs, **overrides)
            entry["variants"][variant] = stage_speed(folder, model)
        spec = model_spec(params, model)
        if spec.builder == "resnet50" or spec.network.get("backbone") == "ResNet50":
            entry["forward_flops_per_image"] = flops_in_subprocess(model, base)
            report_path = base / TRAIN_REPORTS_DIR / f"{model}.json"
            entry["achieved_flops"] = achieved_flops(entry, json.loads(report_path.read_text())["validation_images"])
        results[model] = entry
    return results


def achieved_flops(entry, validation_images):
    """Training FLOP/s: 3 forward passes' worth per training image (forward, and backward at about twice
    the forward), one per validation image, at our stage's median steady speed."""
    ours = entry["ours"]
    epochs_per_second = ours["steady_images_per_second"] / ours["train_images"]
    return (3 * ours["train_images"] + validation_images) * entry["forward_flops_per_image"] * epochs_per_second


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


# ---------------------------------------------------------------- scale

SCALE_DATASET, SCALE_MODEL = "happy", "happy_cnn"
SCALE_STAGES = (("download", SCALE_DATASET), ("preprocess", SCALE_DATASET), ("train", SCALE_MODEL),
                ("evaluate", SCALE_MODEL))


def scale_project(directory, params):
    """A folder where the stages run SCALE_MODEL on a generated copy of SCALE_DATASET: one epoch, one phase."""
    directory.mkdir(parents=True)
    params = json.loads(json.dumps(params))
    params["datasets"] = {SCALE_DATASET: {**params["datasets"][SCALE_DATASET], "fingerprint": None}}
    model = params["models"][SCALE_MODEL]
    model.setdefault("train", {}).update(epochs=1, fine_tune=None, early_stopping_patience=None)
    params["models"] = {SCALE_MODEL: model}
    (directory / PARAMS_FILE).write_text(yaml.safe_dump(params, sort_keys=False))
    return directory


def scale_run(params, factor, workdir):
    """Generate SCALE_DATASET at `factor` times its size, then time each stage on it as its own process."""
    local = Path(os.environ[LOCAL_DATA_ENV]).resolve()
    spec = dataset_spec(params, SCALE_DATASET)
    data_dir = workdir / f"data-{factor}x"
    log.info("scale %dx: generating the dataset", factor)
    generate_seconds, _, _ = run_measured(
        [sys.executable, "-m", "benchmarks.scale_dataset", str(local / spec.source["mirror"]),
         str(data_dir / spec.source["mirror"]), "--factor", str(factor), "--flip", "--workers", "2"],
        REPO_ROOT, python_env())
    for external in spec.external.values():  # the external test set as it is
        (data_dir / external["mirror"]).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(local / external["mirror"], data_dir / external["mirror"])
    project = scale_project(workdir / f"project-{factor}x", params)
    env = {**python_env(), LOCAL_DATA_ENV: str(data_dir)}
    entry = {"factor": factor, "generate_seconds": round(generate_seconds, 1)}
    for stage, argument in SCALE_STAGES:
        log.info("scale %dx: %s", factor, stage)
        seconds, peak_mib, _ = run_measured([sys.executable, "-m", f"stages.{stage}", argument], project, env)
        entry[stage] = {"seconds": round(seconds, 1), "peak_rss_mib": peak_mib}
    summary = json.loads((project / DATA_REPORTS_DIR / SCALE_DATASET / "summary.json").read_text())
    run = json.loads((project / RUNS_DIR / f"{SCALE_MODEL}.json").read_text())
    metrics = json.loads((project / METRICS_DIR / f"{SCALE_MODEL}.json").read_text())
    entry["images"] = summary["train"]["total"] + summary["test"]["total"]
    entry["test_images"] = summary["test"]["total"]
    entry["train"].update(images=json.loads((project / TRAIN_REPORTS_DIR / f"{SCALE_MODEL}.json").read_text())[
        "train_images"], images_per_second=run["images_per_second"], fit_seconds=run["wall_time_seconds"],
        training_peak_rss_mib=run["peak_memory_mib"])
    entry["evaluate"]["inference_images_per_second"] = metrics["inference"]["images_per_second"]
    entry["processed_mib"] = directory_mib(project / PROCESSED_DIR / SCALE_DATASET)
    shutil.rmtree(data_dir)
    shutil.rmtree(project)
    return entry


def scale_benchmark(params, factors, workdir):
    if not os.environ.get(LOCAL_DATA_ENV):
        raise SystemExit(f"benchmark: error: the scale part generates its data from {LOCAL_DATA_ENV}: set it")
    return {f"{factor}x": scale_run(params, factor, workdir) for factor in factors}


# ---------------------------------------------------------------- experiments and no-op

def dvc(*args, env=None):
    return run_measured([sys.executable, "-m", "dvc", *args], REPO_ROOT, env or python_env())


def queued_experiments(jobs, overrides):
    """Queue one experiment per set of -S overrides, start the queue with `jobs` workers, wait for all.

    Returns the wall seconds from `dvc queue start` until the last experiment finished.
    """
    names = [f"benchmark-jobs{jobs}-{index}" for index in range(len(overrides))]
    for name, settings in zip(names, overrides):
        dvc("exp", "run", "--queue", "--name", name, *[arg for setting in settings for arg in ("-S", setting)])
    started = time.perf_counter()
    dvc("queue", "start", "--jobs", str(jobs))
    while True:
        time.sleep(2)
        _, _, status = dvc("queue", "status")
        rows = [line.split() for line in status.splitlines() if any(name in line for name in names)]
        if rows and not any(word in ("Queued", "Running") for row in rows for word in row):
            break
    seconds = time.perf_counter() - started
    failed = [row for row in rows if "Success" not in row]
    dvc("queue", "stop")
    dvc("exp", "remove", *names)
    if failed:
        raise RuntimeError(f"queued experiments failed: {failed}")
    return round(seconds, 1)


def queue_timing(params, model, epochs):
    """Two one-model experiments (two learning rates) in parallel (--jobs 2) and one after the other (--jobs 1).

    Each pair has its own learning rates, so DVC's run cache cannot answer the second pair from the first.
    """
    rate = params["models"][model].get("train", {}).get("learning_rate", params["train"]["learning_rate"])
    setting = f"models.{model}.train"
    pairs = {"sequential": (1, (rate * 0.5, rate * 2)), "parallel": (2, (rate * 0.4, rate * 2.5))}
    results = {"model": model, "epochs": epochs}
    for run, (jobs, rates) in pairs.items():
        log.info("queue: two experiments with --jobs %d", jobs)
        results[run] = {"jobs": jobs, "learning_rates": list(rates), "seconds": queued_experiments(
            jobs, [[f"{setting}.learning_rate={value:g}", f"{setting}.epochs={epochs}"] for value in rates])}
    results["speedup"] = round(results["sequential"]["seconds"] / results["parallel"]["seconds"], 2)
    return results


def noop_repro(repeats=5):
    """`dvc repro` with nothing to do, in this project (its pipeline must be up to date), and DVC's own start."""
    runs, starts = [], []
    for _ in range(repeats):
        seconds, _, output = dvc("repro")
        if "Running stage" in output:
            raise SystemExit("benchmark: error: the pipeline is not up to date: run `dvc repro` first")
        runs.append(round(seconds, 2))
        starts.append(round(dvc("--version")[0], 2))
    return {"seconds": runs, "median_seconds": float(np.median(runs)), "dvc_start_median_seconds": float(np.median(starts))}


# ---------------------------------------------------------------- the report

def directory_mib(path):
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 1)


def markdown_table(rows):
    """A list of {column: value} rows as a Markdown table (numbers as given, already rounded)."""
    return pd.DataFrame(rows).fillna("").to_markdown(index=False, disable_numparse=True)


def speed_rows(speed):
    for model, entry in speed.items():
        ours, plain = entry["ours"], entry["keras"]
        yield {"model": model, "batch": entry["batch_size"],
               "ours img/s (whole run)": round(ours["images_per_second"]),
               "Keras img/s (whole run)": round(plain["images_per_second"]), "ratio": f"{entry['ratio']:.2f}",
               "ratio per repeat": "-".join(f"{ratio:.2f}" for ratio in entry.get("ratio_range", [entry["ratio"]])),
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
            compiled = "" if variant != "xla" or run["jit_compile"] else " (no XLA)"
            row[f"{variant} img/s"] = f"{run['steady_images_per_second']:.0f}{compiled}"
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


def stamp(results, part):
    """'(measured at commit X on date Y)' for one part of the results."""
    when = results["parts"][part]
    return f"Measured at commit {when['commit']} on {when['date']}."


def scale_rows(scale):
    for size, entry in scale.items():
        for stage, _ in SCALE_STAGES:
            figures = entry[stage]
            count = entry["test_images"] if stage == "evaluate" else entry["train"]["images"] if stage == "train" \
                else entry["images"]
            row = {"size": size, "stage": stage, "images": f"{count:,}", "wall s": f"{figures['seconds']:.1f}",
                   "ms per image": f"{1000 * figures['seconds'] / count:.2f}", "peak MiB": round(figures["peak_rss_mib"])}
            if stage == "train":
                row["ms per image"] += f" (fit: {1000 / figures['images_per_second']:.2f})"
            yield row


def seconds_per_image(entry, stage):
    """A stage's seconds per image of one scale run: train's by its fit time, the others' by the whole process."""
    if stage == "train":
        return 1 / entry["train"]["images_per_second"]
    return entry[stage]["seconds"] / (entry["test_images"] if stage == "evaluate" else entry["images"])


def scale_ratio_rows(scale):
    """Per stage, the largest size's peak memory and time per image over the smallest's."""
    (small_size, small), (large_size, large) = list(scale.items())[0], list(scale.items())[-1]
    for stage, _ in SCALE_STAGES:
        peak = large[stage]["peak_rss_mib"] / small[stage]["peak_rss_mib"]
        time_ratio = seconds_per_image(large, stage) / seconds_per_image(small, stage)
        row = {"stage": stage, f"peak memory {large_size} / {small_size}": f"{peak:.2f}",
               f"time per image {large_size} / {small_size}": f"{time_ratio:.2f}"}
        row["target (memory < 1.3, time within 20 %)"] = "" if stage not in ("train", "evaluate") else \
            "met" if peak < 1.3 and time_ratio <= 1.2 else "missed"
        yield row


def gpu_section(gpu):
    """The figures of benchmarks.backend_speed runs on a GPU machine (reports/benchmarks_gpu.json)."""
    lines = ["", "## GPU", ""]
    note = gpu.get("note")
    if note:
        lines += [note, ""]
    for run in gpu["runs"]:
        machine = run["machine"]
        peak = run["peak"]
        lines += [f"**{machine['device']}**, {run['date']}: Keras {machine['keras']} on {machine['backend']} "
                  f"{machine['backend_version']}, Python {machine['python']}; {run['images']} random images per epoch, "
                  f"steady images/s = the median of {run['epochs']} epochs after the first. Measured peak "
                  f"({run['matmul_size']}^3 matrix products): float32 {peak['float32'] / 1e12:.1f} TFLOP/s, "
                  f"bfloat16 {peak['bfloat16'] / 1e12:.1f} TFLOP/s.", ""]
        variants = [variant for variant in VARIANTS if any(variant in entry for entry in run["models"].values())]
        rows = []
        for model, entry in run["models"].items():
            row = {"model": model, "batch": next(iter(entry.values()))["batch_size"]}
            for variant in variants:
                figures = entry.get(variant)
                row[f"{variant} img/s"] = "" if figures is None else figures.get("error") or \
                    f"{figures['images_per_second']:,.0f}" + ("" if figures["jit_compile"] else " (no XLA)")
            rows.append(row)
        lines += [markdown_table(rows), ""]
        flops = [(model, entry["float32_xla"], entry.get("mixed_bfloat16_xla")) for model, entry in run["models"].items()
                 if "forward_flops_per_image" in entry.get("float32_xla", {}) and "resnet50" in model]
        for model, float32, bfloat16 in flops:
            forward = float32["forward_flops_per_image"]
            achieved = 3 * forward * float32["images_per_second"]
            text = (f"{model}: {forward / 1e9:.2f} GFLOPs per image forward ({gpu.get('flops_basis', 'XLA')}); training "
                    f"at 3 x that per image: {achieved / 1e12:.2f} TFLOP/s in float32, "
                    f"{100 * achieved / peak['float32']:.1f} % of the measured float32 peak")
            if bfloat16 and "images_per_second" in bfloat16:
                achieved16 = 3 * forward * bfloat16["images_per_second"]
                text += (f"; {achieved16 / 1e12:.2f} TFLOP/s with mixed bfloat16, "
                         f"{100 * achieved16 / peak['bfloat16']:.2f} % of the bfloat16 peak")
            lines += [text + ".", ""]
    return lines


def markdown(results):
    machine = results["machine"]
    device = ", ".join(machine["gpus"]) or f"CPU only: {machine['cpu']}, {machine['cores']} cores"
    lines = [
        "# Benchmarks", "",
        "Written by `python -m benchmarks.benchmark`; each section says the commit and date it was measured at.", "",
        f"**Machine:** {device}; {machine['memory_gib']} GiB memory; Python {machine['python']}, TensorFlow "
        f"{machine['tensorflow']}, Keras {machine['keras']}."]
    speed = results.get("speed")
    if speed:
        lines += [
            "", "## Training speed: our train stage against plain Keras", "",
            f"{stamp(results, 'speed')} Each model trained for {results['epochs']} epochs (first phase only, no early "
            "stopping) on its real processed training split, in fresh processes: by our train stage (batches read "
            "from the split on disk by tf.data, per-epoch checkpoint for resuming, dvclive curves) and by plain Keras "
            "(`model.fit` on the same images as NumPy arrays in memory, same builder, compile settings, batch size, "
            "class weights, validation split and epochs), "
            f"{results.get('repeats', 1)} time(s) each, alternating which goes first. *Whole run* counts every "
            "epoch including the first (graph tracing); *steady* uses the median of the later epochs; each figure is "
            "the median over the repeats. Ratio = ours / Keras: above 1 means our stage is faster; *ratio per "
            "repeat* is the lowest and highest whole-run ratio of one repeat's pair, a measure of this machine's "
            "noise. Peak memory: resident memory at its highest, the most of any repeat, in the stage until its "
            "reports are written (*training*) "
            "and in the whole process (*whole stage*); plain Keras holds the split in memory and neither saves nor "
            "checkpoints.", "",
            markdown_table(list(speed_rows(speed)))]
    if speed and any(entry["variants"] for entry in speed.values()):
        lines += ["", "## XLA and mixed precision on this machine", "",
                  f"{stamp(results, 'variants')} Our train stage again, {results['variant_epochs']} epochs, with "
                  "`jit_compile: true` or `mixed_precision: true` (steady images/s, and the ratio to the default "
                  "settings above). *(no XLA)*: Keras compiled without XLA, because the model holds a random "
                  "rotation, zoom or shift layer, which it cannot compile (docs/training.md).", "",
                  markdown_table(list(variant_rows(speed)))]
    flops = list(flops_rows(speed, results["peak"])) if speed else []
    if flops:
        peak = results["peak"]
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
                  f"{stamp(results, 'pipeline')} In a temporary git copy of the project (params.yaml as committed), "
                  "from an empty DVC cache. Pure training = the `fit` time each train stage records "
                  "(`wall_time_seconds` in `reports/runs/`). The overhead is everything else: DVC's own work, starting "
                  "Python and importing TensorFlow in each stage process, and the download, preprocess, evaluate and "
                  "compare stages.", "",
                  markdown_table(list(overhead_rows(pipeline))), "",
                  "## Peak memory of every stage", "",
                  "Each stage but training run once more on its own (`dvc repro --force --single-item`), measured "
                  "as the largest process's peak resident memory (`wait4`); the train stages' peaks are in the "
                  f"speed table. A process that only imports TensorFlow and Keras peaks at "
                  f"{results['tensorflow_import_rss_mib']:.0f} MiB.", "",
                  markdown_table(list(memory_rows(pipeline, results["sizes"])))]
    scale = results.get("scale")
    if scale:
        sizes = ", ".join(f"{size}: {entry['images']:,} images" for size, entry in scale.items())
        lines += ["", f"## Scale: {' and '.join(scale)} the images", "",
                  f"{stamp(results, 'scale')} `python -m benchmarks.scale_dataset` made {SCALE_DATASET} datasets of "
                  f"{sizes} from the real SMILEsmileD images (every image N times, each copy shifted, relit, "
                  "noised and mirrored half the time). Each stage ran as its own process in a scratch project "
                  f"(`{SCALE_MODEL}`, one epoch, one phase), measured by its wall time and peak resident memory "
                  "(`wait4`). Train's time per image is its `fit` time (in brackets) beside the whole process; "
                  "evaluate's is per test image and includes its fixed costs (loading TensorFlow and the model, "
                  "Grad-CAM pictures).", "",
                  markdown_table(list(scale_rows(scale))), "",
                  markdown_table(list(scale_ratio_rows(scale)))]
    queue = results.get("queue")
    if queue:
        lines += ["", "## Experiments in parallel", "",
                  f"{stamp(results, 'queue')} Two one-model experiments (`{queue['model']}` at two learning rates, "
                  f"{queue['epochs']} epochs each: train, evaluate and compare re-run), queued with `dvc exp run "
                  "--queue -S ...` and run by `dvc queue start --jobs N`; wall time from the start of the queue to "
                  "the end of the last experiment. Each pair has its own learning rates, so DVC's run cache cannot "
                  "answer one from the other.", "",
                  markdown_table([{"run": f"one after the other (--jobs {queue['sequential']['jobs']})",
                                   "wall s": f"{queue['sequential']['seconds']:.1f}"},
                                  {"run": f"in parallel (--jobs {queue['parallel']['jobs']})",
                                   "wall s": f"{queue['parallel']['seconds']:.1f}"}]), "",
                  f"Parallel is {queue['speedup']:.2f}x as fast as one after the other."]
    noop = results.get("noop")
    if noop:
        lines += ["", "## dvc repro with nothing to do", "",
                  f"{stamp(results, 'noop')} `dvc repro` in this project with every stage up to date, "
                  f"{len(noop['seconds'])} times: median {noop['median_seconds']:.2f} s "
                  f"({', '.join(f'{value:.2f}' for value in noop['seconds'])}); DVC's own start (`dvc --version`) "
                  f"takes {noop['dvc_start_median_seconds']:.2f} s of that. Where the rest goes: docs/benchmarks.md."]
    if results.get("gpu"):
        lines += gpu_section(results["gpu"])
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


PARTS = ("speed", "variants", "pipeline", "scale", "queue", "noop")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to measure, of {', '.join(PARTS)} (default: all); the figures "
                        "of parts not measured are kept from the report's JSON")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per training-speed run (default 3)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of our stage and of plain Keras per model, "
                        "alternating (default 2)")
    parser.add_argument("--models", help="comma-separated models to time (default: all in params.yaml)")
    parser.add_argument("--variant-models", help="comma-separated models to time with XLA and with mixed precision "
                        "(default: the same as --models)")
    parser.add_argument("--variant-epochs", type=int, default=2, help="epochs per XLA / mixed-precision run (default 2)")
    parser.add_argument("--changed-model", help="the model whose learning rate the pipeline part halves "
                        "(in its copy only) to time a one-model re-run (default: the first in params.yaml)")
    parser.add_argument("--scale-factors", default="1,10", help="dataset sizes of the scale part (default 1,10)")
    parser.add_argument("--queue-epochs", type=int, default=3, help="epochs of each queued experiment (default 3)")
    parser.add_argument("--gpu-results", default="reports/benchmarks_gpu.json",
                        help="figures of benchmarks.backend_speed on a GPU machine, shown when the file exists")
    parser.add_argument("--output", default="reports/benchmarks", help="report path without suffix")
    parser.add_argument("--baseline", help=argparse.SUPPRESS)  # internal: the plain-Keras run of one model
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.baseline:
        keras_baseline(args.baseline)
        return
    parts = args.parts.split(",")
    if set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(set(parts) - set(PARTS))}; known: {', '.join(PARTS)}")
    params = load_params()
    models = args.models.split(",") if args.models else list(params["models"])
    variant_models = models if args.variant_models is None else [m for m in args.variant_models.split(",") if m]
    for model in {*models, *variant_models}:
        model_spec(params, model)  # unknown names fail here, before anything runs
    if {"speed", "variants"} & set(parts) and not all(
            (Path(PROCESSED_DIR) / model_spec(params, m).dataset.name / "train").is_dir() for m in models):
        sys.exit("benchmark: error: data/processed is incomplete: run `dvc repro` first")
    output = Path(args.output)
    results = earlier_results(output.with_suffix(".json"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    results["machine"] = in_subprocess("benchmark.machine_description()")
    gpu_path = Path(args.gpu_results)
    results["gpu"] = json.loads(gpu_path.read_text()) if gpu_path.is_file() else None

    def measured(part, figures):
        results[part] = figures
        results["parts"][part] = {"commit": commit, "date": time.strftime("%Y-%m-%d")}
        write_report(output, results)  # each part is kept as soon as it is measured

    with tempfile.TemporaryDirectory(prefix="benchmark-") as workdir:
        workdir = Path(workdir)
        if "speed" in parts or "variants" in parts:
            variants = {"xla": {"jit_compile": True}, "mixed_precision": {"mixed_precision": True}} \
                if "variants" in parts else {}
            results["peak"] = in_subprocess("benchmark.machine_peak(benchmark.machine_description())")
            results["epochs"], results["variant_epochs"], results["repeats"] = args.epochs, args.variant_epochs, \
                args.repeats
            speed = training_speed(params, models, args.epochs, args.repeats, variants, variant_models,
                                   args.variant_epochs, workdir / "speed")
            results["tensorflow_import_rss_mib"] = tensorflow_import_rss()
            if "variants" in parts:
                results["parts"]["variants"] = {"commit": commit, "date": time.strftime("%Y-%m-%d")}
            measured("speed", speed)
        if "pipeline" in parts:
            pipeline = pipeline_overhead(REPO_ROOT, workdir, args.changed_model or models[0])
            results["sizes"] = stage_sizes(workdir / "pipeline", params)
            measured("pipeline", pipeline)
        if "scale" in parts:
            measured("scale", scale_benchmark(params, [int(f) for f in args.scale_factors.split(",")], workdir))
        if "queue" in parts:
            measured("queue", queue_timing(params, SCALE_MODEL, args.queue_epochs))
        if "noop" in parts:
            measured("noop", noop_repro())
    write_report(output, results)


def in_subprocess(expression):
    """The JSON value of a benchmark expression, computed in its own process.

    This process must not import TensorFlow: Linux counts the peak memory of the process that
    starts a stage in the stage's own rusage, and the stages report that as their peak.
    """
    code = f"import json; from benchmarks import benchmark; print(json.dumps({expression}))"
    _, _, output = run_measured([sys.executable, "-c", code], REPO_ROOT, python_env())
    return json.loads(output.strip().splitlines()[-1])


def earlier_results(path):
    """The figures of an earlier run to keep for the parts not measured now (none from before per-part dates)."""
    if path.is_file():
        earlier = json.loads(path.read_text())
        if "parts" in earlier:
            return earlier
    return {"parts": {}}


def write_report(output, results):
    write_json(output.with_suffix(".json"), results)
    with staged_path(output.with_suffix(".md")) as temporary:
        temporary.write_text(markdown(results), encoding="utf-8")
    log.info("wrote %s.md and %s.json (%s)", output, output, ", ".join(results["parts"]) or "no parts yet")


if __name__ == "__main__":
    main()
