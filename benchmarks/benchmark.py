"""Benchmark the pipeline on this machine (a user command, not a stage), by part: our train stage against
plain Keras on each Keras backend, with ResNet50's FLOP/s (speed); each model by precision and XLA on
random images, on the backend KERAS_BACKEND names (variants); the stages on SMILEsmileD made 1x and 10x
its size (scale); two queued experiments (queue); a `dvc repro` with nothing to do (noop). Writes
reports/benchmarks.md and .json, keeping what parts not run now measured, with the variants part's GPU
runs (reports/benchmarks_gpu.json). Run it idle:

    python -m benchmarks.benchmark [--parts speed,variants,scale,queue,noop] [--backends tensorflow,jax]
                                   [--models a,b] [--repeats 2]
"""

import argparse
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmarks import backend_speed
from benchmarks.backend_speed import VARIANTS
from stages.backend import use_backend
from stages.config import LOCAL_DATA_ENV, LOCAL_WEIGHTS_ENV, PARAMS_FILE, PROCESSED_DIR, load_params, model_spec
from stages.files import staged_path, write_json

log = logging.getLogger("benchmark")

REPO_ROOT = Path(__file__).resolve().parents[1]
PARTS = ("speed", "variants", "scale", "queue", "noop")
SCALE_DATASET, SCALE_MODEL = "happy", "happy_cnn"
SCALE_STAGES = (("download", SCALE_DATASET), ("preprocess", SCALE_DATASET), ("train", SCALE_MODEL),
                ("evaluate", SCALE_MODEL))


def python_env(**extra):
    """This environment with the project importable (before what PYTHONPATH holds: the GPU check's wheels),
    the LOCAL_* folders absolute (runs happen elsewhere),
    and this interpreter first on PATH (dvc.yaml's commands say `python`)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]), **extra}
    for name in (LOCAL_DATA_ENV, LOCAL_WEIGHTS_ENV):
        if env.get(name):
            env[name] = str(Path(env[name]).resolve())
    return env


def run_measured(command, cwd=REPO_ROOT, env=None):
    """Run a command; return (wall seconds, peak resident MiB, output). Python runs (`-m module` or `-c code`,
    DVC excepted) go through benchmarks.peak_memory: Linux carries a parent's peak into a child's rusage."""
    with tempfile.TemporaryDirectory(prefix="peak-") as scratch:
        peak_file = Path(scratch) / "peak"
        if command[0] == sys.executable and command[1] in ("-m", "-c") and command[2] != "dvc":
            command = [sys.executable, "-m", "benchmarks.peak_memory", str(peak_file),
                       *([] if command[1] == "-m" else ["-c"]), *command[2:]]
        started = time.perf_counter()
        process = subprocess.run(command, cwd=cwd, env=env or python_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, command))} failed ({process.returncode}):\n{process.stdout[-4000:]}")
        peak = float(peak_file.read_text()) if peak_file.is_file() else 0.0
        return time.perf_counter() - started, peak, process.stdout


def stages_run(output):
    """The stages a `dvc repro` output says it ran, in its order."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def steady(images, epoch_seconds):
    """Images/s by the median epoch after the first (which also traces and compiles)."""
    return round(images / float(np.median(epoch_seconds[1:] or epoch_seconds)), 1)


def scratch_project(directory, params, model, epochs, processed=True):
    """A folder where the train stage runs `model` for `epochs` epochs (one phase), on the real processed data."""
    (directory / "data").mkdir(parents=True)
    if processed:
        os.symlink(Path(PROCESSED_DIR).resolve(), directory / PROCESSED_DIR)
    params = json.loads(json.dumps(params))
    params["models"][model].setdefault("train", {}).update(epochs=epochs, fine_tune=None, early_stopping_patience=None)
    (directory / PARAMS_FILE).write_text(yaml.safe_dump(params, sort_keys=False))
    return directory


def stage_speed(directory, model):
    """Our train stage, as dvc runs it: its own report's figures and the process's peak memory."""
    seconds, peak, _ = run_measured([sys.executable, "-m", "stages.train", model], directory)
    spec = model_spec(load_params(directory / PARAMS_FILE), model)
    run = {**json.loads((directory / spec.report_path).read_text()), **json.loads((directory / spec.run_path).read_text())}
    return {"images_per_second": run["images_per_second"], "epoch_seconds": run["epoch_seconds"],
            "steady_images_per_second": steady(run["images_per_epoch"], run["epoch_seconds"]),
            "images_per_epoch": run["images_per_epoch"], "validation_images": run["validation_images"],
            "process_seconds": round(seconds, 1), "peak_rss_mib": peak, "training_peak_rss_mib": run["peak_memory_mib"]}


def keras_baseline(model):
    """Plain `model.fit` on the split's arrays in memory, from the train stage's own setup (model, seed,
    validation carve, class weights) and compile settings. Runs as `benchmark --baseline <model>`."""
    spec = model_spec(load_params(), model)
    use_backend(spec.train["backend"])
    import keras

    from stages.train import compile_model, prepare_training

    setup, train = prepare_training(spec), spec.train
    compile_model(setup.model, train["optimizer"], train["learning_rate"], spec.dataset.num_classes,
                  setup.runtime["jit_compile"])
    images, labels, epoch_ends = setup.images, setup.labels, []
    started = time.perf_counter()
    setup.model.fit(images[setup.train_indices], labels[setup.train_indices], batch_size=train["batch_size"],
                    validation_data=(images[setup.validation_indices], labels[setup.validation_indices]),
                    epochs=train["epochs"], class_weight=setup.class_weight, verbose=2, callbacks=[
                        keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: epoch_ends.append(time.perf_counter()))])
    epoch_seconds = [round(value, 4) for value in np.diff([started, *epoch_ends])]
    trained = len(setup.train_indices)
    write_json(Path("baseline.json"), {"epoch_seconds": epoch_seconds, "steady_images_per_second": steady(
        trained, epoch_seconds), "images_per_second": round(trained * train["epochs"] / (epoch_ends[-1] - started), 1)})


def baseline_speed(directory, model):
    seconds, peak, _ = run_measured([sys.executable, "-m", "benchmarks.benchmark", "--baseline", model], directory)
    return {**json.loads((directory / "baseline.json").read_text()), "process_seconds": round(seconds, 1),
            "peak_rss_mib": peak}


def run_order(repeats):
    """Ours first, then Keras first, and so on: a machine slowing down mid-benchmark weighs on both sides."""
    return [("ours", "keras") if repeat % 2 == 0 else ("keras", "ours") for repeat in range(repeats)]


def compare_sides(ours_runs, keras_runs):
    """Each side's median speeds and highest peaks over its runs; the ratios ours / Keras of the medians,
    and the range of each repeat's own ratio (this machine's noise)."""
    def summary(runs):
        medians = {key: round(float(np.median([run[key] for run in runs])), 1)
                   for key in ("images_per_second", "steady_images_per_second", "process_seconds")}
        return {**runs[0], **medians, "runs": runs, **{key: max(run[key] for run in runs)
                                                        for key in ("peak_rss_mib", "training_peak_rss_mib") if key in runs[0]}}

    ours, keras = summary(ours_runs), summary(keras_runs)
    pairs = [mine["images_per_second"] / theirs["images_per_second"] for mine, theirs in zip(ours_runs, keras_runs)]
    return {"ours": ours, "keras": keras, "ratio": round(ours["images_per_second"] / keras["images_per_second"], 3),
            "steady_ratio": round(ours["steady_images_per_second"] / keras["steady_images_per_second"], 3),
            "ratio_range": [round(min(pairs), 3), round(max(pairs), 3)]}


def training_speed(params, models, epochs, repeats, workdir, backend):
    """Our stage against plain Keras, per model, with every model's train.backend set to `backend`."""
    params, results = json.loads(json.dumps(params)), {}
    params["train"]["backend"] = backend
    for block in params["models"].values():
        block.get("train", {}).pop("backend", None)
    for model in models:
        runs, spec = {"ours": [], "keras": []}, model_spec(params, model)
        for repeat, order in enumerate(run_order(repeats)):
            log.info("speed on %s: %s (%d epochs), repeat %d of %d", backend, model, epochs, repeat + 1, repeats)
            folder = scratch_project(workdir / backend / model / f"repeat-{repeat + 1}", params, model, epochs)
            for side in order:
                runs[side].append(stage_speed(folder, model) if side == "ours" else baseline_speed(folder, model))
        entry = results[model] = {"batch_size": spec.train["batch_size"], **compare_sides(runs["ours"], runs["keras"])}
        if spec.builder == "resnet50" or spec.network.get("backbone") == "ResNet50":
            ours = entry["ours"]  # a training image costs a forward pass and a backward of about two, a validation one
            entry["forward_flops_per_image"] = backend_speed.model_forward_flops(model)
            entry["achieved_flops"] = (3 * ours["images_per_epoch"] + ours["validation_images"]) * entry[
                "forward_flops_per_image"] * ours["steady_images_per_second"] / ours["images_per_epoch"]
    return results


def variant_speeds(models, variants, images, epochs, budget_seconds, batch_size=None):
    """Every model in every variant (each variant over all models first: a run cut short covers every model)."""
    started, params, machine = time.perf_counter(), load_params(), backend_speed.machine_description()
    size = 8192 if machine["gpus"] else 2048
    results = {"date": time.strftime("%Y-%m-%d"), "machine": machine, "images": images, "epochs": epochs,
               "models": {}, "skipped": [], "peak": {dtype: backend_speed.matmul_peak(dtype, size)
                                                     for dtype in ("float32", "bfloat16")}}
    for variant in variants:
        for model in models:
            entry = results["models"].setdefault(model, {})
            if time.perf_counter() - started > budget_seconds:
                results["skipped"].append(f"{model} {variant}")
                continue
            spec = model_spec(params, model)
            if batch_size:
                spec = dataclasses.replace(spec, train={**spec.train, "batch_size": batch_size})
            try:
                entry[variant] = backend_speed.measure(spec, variant, *backend_speed.random_split(spec, images), epochs)
            except Exception as error:  # noqa: BLE001 (a variant the backend cannot run is reported, not fatal)
                entry[variant] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
            entry[variant]["batch_size"] = spec.train["batch_size"]
            log.info("variants: %s %s: %s", model, variant, entry[variant].get("images_per_second", entry[variant]))
    return results


def scale_run(params, factor, workdir):
    """SCALE_DATASET generated at `factor` times its size, then each stage on it as its own process."""
    local, block = Path(os.environ[LOCAL_DATA_ENV]).resolve(), params["datasets"][SCALE_DATASET]
    data_dir, project = workdir / f"data-{factor}x", workdir / f"project-{factor}x"
    run_measured([sys.executable, "-m", "tools.scale_dataset", str(local / block["source"]["mirror"]),
                  str(data_dir / block["source"]["mirror"]), "--factor", str(factor), "--flip", "--workers", "2"])
    for external in block["external"].values():  # the external test sets as they are
        (data_dir / external["mirror"]).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(local / external["mirror"], data_dir / external["mirror"])
    scratch = {**params, "datasets": {SCALE_DATASET: {**block, "fingerprint": None}},
               "models": {SCALE_MODEL: params["models"][SCALE_MODEL]}}
    scratch_project(project, scratch, SCALE_MODEL, 1, processed=False)
    entry = {"factor": factor}
    for stage, argument in SCALE_STAGES:
        log.info("scale %dx: %s", factor, stage)
        seconds, peak, _ = run_measured([sys.executable, "-m", f"stages.{stage}", argument], project,
                                        python_env(**{LOCAL_DATA_ENV: str(data_dir)}))
        entry[stage] = {"seconds": round(seconds, 1), "peak_rss_mib": peak}
    spec = model_spec(load_params(project / PARAMS_FILE), SCALE_MODEL)
    summary = json.loads((project / spec.dataset.reports_dir / "summary.json").read_text())
    entry.update(images=summary["train"]["total"] + summary["test"]["total"], test_images=summary["test"]["total"])
    entry["train"].update(images=json.loads((project / spec.report_path).read_text())["train_images"],
                          images_per_second=json.loads((project / spec.run_path).read_text())["images_per_second"])
    shutil.rmtree(data_dir)
    shutil.rmtree(project)
    return entry


def dvc(*args):
    return run_measured([sys.executable, "-m", "dvc", *args])


def queue_timing(params, model, epochs):
    """Two one-model experiments (two learning rates) by `dvc queue start --jobs 1`, then two others by --jobs 2
    (other rates, so that DVC's run cache cannot answer them): wall seconds from the start to the last end."""
    rate = params["models"][model].get("train", {}).get("learning_rate", params["train"]["learning_rate"])
    results = {"model": model, "epochs": epochs}
    for run, jobs, factors in (("sequential", 1, (0.5, 2)), ("parallel", 2, (0.4, 2.5))):
        names = [f"benchmark-jobs{jobs}-{index}" for index in range(2)]
        for name, factor in zip(names, factors):
            dvc("exp", "run", "--queue", "--name", name, "-S", f"models.{model}.train.learning_rate={rate * factor:g}",
                "-S", f"models.{model}.train.epochs={epochs}")
        started = time.perf_counter()
        dvc("queue", "start", "--jobs", str(jobs))
        while True:
            time.sleep(2)
            rows = [line.split() for line in dvc("queue", "status")[2].splitlines() if any(n in line for n in names)]
            if rows and not any("Queued" in row or "Running" in row for row in rows):
                break
        results[run] = {"jobs": jobs, "seconds": round(time.perf_counter() - started, 1)}
        dvc("queue", "stop")
        dvc("exp", "remove", *names)
        if any("Success" not in row for row in rows):
            raise RuntimeError(f"queued experiments failed: {rows}")
    results["speedup"] = round(results["sequential"]["seconds"] / results["parallel"]["seconds"], 2)
    return results


def noop_repro(repeats=5):
    """`dvc repro` with nothing to do in this project (up to date and committed), and DVC's own start."""
    runs = [dvc("repro") for _ in range(repeats)]
    if any(stages_run(output) for _, _, output in runs):
        raise SystemExit("benchmark: error: the pipeline is not up to date: run `dvc repro` first")
    seconds = [round(seconds, 2) for seconds, _, _ in runs]
    return {"seconds": seconds, "median_seconds": float(np.median(seconds)),
            "dvc_start_median_seconds": float(np.median([dvc("--version")[0] for _ in range(repeats)]))}


def table(rows):
    return pd.DataFrame(list(rows)).fillna("").to_markdown(index=False, disable_numparse=True)


def speed_rows(speed):
    for backend, models in speed.items():
        for model, entry in models.items():
            yield speed_row(backend, model, entry)


def speed_row(backend, model, entry):
    ours, plain = entry["ours"], entry["keras"]
    return {"backend": backend, "model": model, "batch": entry["batch_size"], "ours img/s": f"{ours['images_per_second']:.0f}",
               "Keras img/s": f"{plain['images_per_second']:.0f}", "ratio": f"{entry['ratio']:.2f}",
               "ratio per repeat": "-".join(f"{ratio:.2f}" for ratio in entry["ratio_range"]),
               "steady ratio": f"{entry['steady_ratio']:.2f}",
            "ours peak MiB (training / stage)": f"{ours['training_peak_rss_mib']:.0f} / {ours['peak_rss_mib']:.0f}",
            "Keras peak MiB": f"{plain['peak_rss_mib']:.0f}"}


def backend_rows(speed):
    """Per model measured on both backends: JAX's images/s over TensorFlow's, our stage's and plain Keras's."""
    if not {"tensorflow", "jax"} <= set(speed):
        return
    for model in speed["tensorflow"]:
        if model in speed["jax"]:
            tf, jax = speed["tensorflow"][model], speed["jax"][model]
            yield {"model": model, **{f"{side} JAX / TensorFlow": f"{jax[key]['images_per_second'] / tf[key]['images_per_second']:.2f}"
                                      for side, key in (("our stage", "ours"), ("plain Keras", "keras"))}}


def variant_rows(run):
    """One row per model of a variants run: images/s per variant, or why it did not run."""
    for model, entry in run["models"].items():
        yield {**({"backend": run["machine"]["backend"]} if "machine" in run else {}), "model": model, "batch": next(iter(entry.values()))["batch_size"], **{
            f"{variant} img/s": figures.get("error") or f"{figures['images_per_second']:,.0f}" + (
                "" if figures["jit_compile"] else " (no XLA)") for variant, figures in entry.items()}}


def where(stamp):
    """The machine a stamp names, in parentheses; nothing for stamps from before they named one."""
    return f" ({stamp['device']})" if stamp.get("device") else ""


def flops_lines(results):
    """Each ResNet50's achieved training FLOP/s against the peak measured on the same machine in the same run:
    on the CPU, and in the GPU runs."""
    for backend, models in results.get("speed", {}).items():
        run = results.get("speed_runs", {}).get(backend, {})  # the peak measured beside these figures, if recorded
        for model, entry in models.items():
            if "achieved_flops" in entry:
                yield (f"- {model}, our stage on {backend}{where(run) or ' on this machine'}: "
                       f"{entry['forward_flops_per_image'] / 1e9:.2f} GFLOPs per image forward, "
                       f"{entry['achieved_flops'] / 1e9:.1f} GFLOP/s" + (
                           f", {100 * entry['achieved_flops'] / run['peak']:.0f} % of the float32 peak measured in that run"
                           if run.get("peak") else ""))
    for run in (results.get("gpu") or {}).get("runs", []):
        for model, entry in run["models"].items():
            forward = entry.get("float32_xla", {}).get("forward_flops_per_image")
            for variant, dtype in (("float32_xla", "float32"), ("mixed_bfloat16_xla", "bfloat16")):
                if "resnet50" in model and forward and "images_per_second" in entry.get(variant, {}):
                    achieved = 3 * forward * entry[variant]["images_per_second"]
                    yield (f"- {model} on {run['machine']['device']}, {variant}: {achieved / 1e12:.2f} TFLOP/s, "
                           f"{100 * achieved / run['peak'][dtype]:.1f} % of the measured {dtype} peak")


def seconds_per_image(entry, stage):
    """(images, seconds per image) of one stage of a scale run: train by its fit speed, the others by the
    whole process (evaluate per test image)."""
    images = {"train": entry["train"]["images"], "evaluate": entry["test_images"]}.get(stage, entry["images"])
    return images, 1 / entry["train"]["images_per_second"] if stage == "train" else entry[stage]["seconds"] / images


def scale_rows(scale):
    """Per stage: each size's images, time per image and peak memory; the largest size's over the smallest's."""
    small, large = (scale[pick(scale, key=lambda size: scale[size]["factor"])] for pick in (min, max))
    for stage, _ in SCALE_STAGES:
        row = {"stage": stage}
        for size, entry in scale.items():
            images, seconds = seconds_per_image(entry, stage)
            row.update({f"{size} images": f"{images:,}", f"{size} ms/image": f"{1000 * seconds:.2f}",
                        f"{size} peak MiB": f"{entry[stage]['peak_rss_mib']:.0f}"})
        row["memory ratio"] = f"{large[stage]['peak_rss_mib'] / small[stage]['peak_rss_mib']:.2f}"
        row["time per image ratio"] = f"{seconds_per_image(large, stage)[1] / seconds_per_image(small, stage)[1]:.2f}"
        yield row


def gpu_table(run):
    machine = run["machine"]
    return (f"**{machine['device']}**, {run['date']}: Keras {machine['keras']} on {machine['backend']} "
            f"{machine['backend_version']}, {run['images']} random images per epoch.\n\n{table(variant_rows(run))}")


def markdown(results):
    """The template's section for each part with figures, its tables filled in."""
    tables = {"flops": "\n".join(flops_lines(results)),
              "gpu": "\n\n".join(gpu_table(run) for run in (results.get("gpu") or {}).get("runs", []))}
    for part, rows in (("speed", speed_rows), ("scale", scale_rows)):
        if results.get(part):
            tables[part] = table(rows(results[part]))
    tables["speed_runs"] = "\n".join(
        f"- {backend}: measured at commit {run['commit']} on {run['date']}{where(run)}, {run['epochs']} epochs, "
        f"{run['repeats']} run{'s' if run['repeats'] != 1 else ''} per side"
        for backend, run in results.get("speed_runs", {}).items())
    together = results.get("backend_ratios")
    tables["backends"] = (f"Measured together at commit {together['commit']} on {together['date']}{where(together)}.\n\n"
                          + table(together["rows"])) if together else ""
    if results.get("variants"):
        tables["variants"] = "\n\n".join(table(variant_rows(run)) for run in results["variants"].values())
    shown = {part for part in PARTS if results.get(part)} | {part for part in ("flops", "gpu", "backends")
                                                             if tables[part]}
    fields = {**results, "SCALE_DATASET": SCALE_DATASET, "SCALE_MODEL": SCALE_MODEL, "tables": tables, "stamp": {
        part: f"Measured at commit {when['commit']} on {when['date']}{where(when)}."
        for part, when in results["parts"].items()}}
    head, *sections = Path(__file__).with_name("report_template.md").read_text().split("<!-- part: ")
    return head.format(**fields) + "".join(text.format(**fields) for part, text in (
        section.split(" -->\n", 1) for section in sections) if part in shown) + "\nRaw figures: `benchmarks.json`.\n"


def earlier_results(path):
    """What an earlier run measured, to keep for the parts not measured now."""
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    # Reports before the speed part timed both backends held one backend's figures, TensorFlow's.
    if any("ours" in entry for entry in earlier.get("speed", {}).values()):
        earlier["speed"] = {"tensorflow": earlier["speed"]}
    if "models" in (earlier.get("variants") or {}):
        earlier["variants"] = {earlier["variants"]["machine"]["backend"]: earlier["variants"]}
    if "speed" in earlier and "speed_runs" not in earlier:  # before each backend's run was stamped on its own
        stamp, rows = earlier.get("parts", {}).get("speed", {}), list(backend_rows(earlier["speed"]))
        if rows:
            earlier["backend_ratios"] = {**stamp, "rows": rows}
        earlier["speed_runs"] = {backend: {**stamp, "epochs": earlier.get("epochs"), "repeats": earlier.get("repeats")}
                                 for backend in earlier["speed"]}
    return {**{key: earlier[key] for key in (*PARTS, "speed_runs", "backend_ratios") if key in earlier},
            "parts": {part: when for part, when in earlier.get("parts", {}).items() if part in earlier}}


def write_report(output, results):
    write_json(output.with_suffix(".json"), results)
    with staged_path(output.with_suffix(".md")) as temporary:
        temporary.write_text(markdown(results), encoding="utf-8")
    log.info("wrote %s.md and %s.json (%s)", output, output, ", ".join(results["parts"]) or "no parts yet")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)} (default all)")
    parser.add_argument("--models", help="comma-separated models to time (default: all in params.yaml)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per training-speed run (default 3)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of our stage and of plain Keras per model (default 2)")
    parser.add_argument("--backends", default="tensorflow,jax", help="speed: Keras backends to time (default both; "
                        "the others' earlier figures are kept)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)} (default all)")
    parser.add_argument("--variant-images", type=int, default=512, help="random images per variant epoch (default 512)")
    parser.add_argument("--variant-batch-size", type=int, help="variants: this batch size instead of each model's")
    parser.add_argument("--budget-seconds", type=float, default=float("inf"), help="variants: start none after this")
    parser.add_argument("--scale-factors", default="1,10", help="dataset sizes of the scale part (default 1,10)")
    parser.add_argument("--gpu-results", default="reports/benchmarks_gpu.json", help="the variants part's GPU runs")
    parser.add_argument("--output", default="reports/benchmarks", help="report path without suffix")
    parser.add_argument("--baseline", help=argparse.SUPPRESS)  # internal: the plain-Keras run of one model
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("jax").setLevel(logging.WARNING)  # its INFO line for each accelerator it does not find
    if args.baseline:
        return keras_baseline(args.baseline)
    parts, variants, backends, params = (args.parts.split(","), args.variants.split(","), args.backends.split(","),
                                         load_params())
    for unknown, known in ((set(parts) - set(PARTS), PARTS), (set(variants) - set(VARIANTS), VARIANTS)):
        if unknown:
            parser.error(f"unknown {sorted(unknown)}; known: {', '.join(known)}")
    models = args.models.split(",") if args.models else list(params["models"])
    specs = [model_spec(params, model) for model in models]  # unknown names fail here, before anything runs
    if "speed" in parts and not all((spec.dataset.processed_dir / "train").is_dir() for spec in specs):
        sys.exit("benchmark: error: data/processed is incomplete: run `dvc repro` first")
    if "scale" in parts and not os.environ.get(LOCAL_DATA_ENV):
        sys.exit(f"benchmark: error: the scale part generates its data from {LOCAL_DATA_ENV}: set it")
    output, gpu = Path(args.output), Path(args.gpu_results)
    results = {**earlier_results(output.with_suffix(".json")), "machine": backend_speed.machine_description(),
               "gpu": json.loads(gpu.read_text()) if gpu.is_file() else None}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    with tempfile.TemporaryDirectory(prefix="benchmark-") as workdir:
        measures = {"speed": lambda: {**(results.get("speed") or {}), **{backend: training_speed(
                        params, models, args.epochs, args.repeats, Path(workdir), backend) for backend in backends}},
                    "variants": lambda: {**(results.get("variants") or {}), os.environ.get("KERAS_BACKEND", "tensorflow"):
                                         variant_speeds(models, variants, args.variant_images, 2, args.budget_seconds,
                                                       args.variant_batch_size)},
                    "scale": lambda: {f"{f}x": scale_run(params, int(f), Path(workdir)) for f in args.scale_factors.split(",")},
                    "queue": lambda: queue_timing(params, SCALE_MODEL, args.epochs), "noop": noop_repro}
        peak = backend_speed.matmul_peak("float32", 2048, 20) if "speed" in parts else None  # kept per backend
        for part in parts:
            results[part] = measures[part]()
            stamp = results["parts"][part] = {"commit": commit, "date": time.strftime("%Y-%m-%d"),
                                              "device": results["machine"]["device"]}
            if part == "speed":  # each backend keeps its own stamp and peak; backends compare within one run only
                results["speed_runs"] = {**results.get("speed_runs", {}), **{
                    backend: {**stamp, "epochs": args.epochs, "repeats": args.repeats, "peak": peak}
                    for backend in backends}}
                if {"tensorflow", "jax"} <= set(backends):
                    results["backend_ratios"] = {**stamp, "rows": list(backend_rows(results["speed"]))}
            write_report(output, results)  # each part is kept as soon as it is measured


if __name__ == "__main__":
    main()
