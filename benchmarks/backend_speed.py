"""Training speed of every model on whichever Keras backend is installed (a user command, not a stage).

For a machine that has an accelerator and JAX or PyTorch but no TensorFlow, where the pipeline
itself cannot run: each model of params.yaml is built by its own builder (random weights: speed does
not depend on them), compiled as the train stage compiles it, and fitted on random images of its
input size, at its batch size: as params.yaml configures it, and without its augmentation layers
(which keep Keras from compiling with XLA) in float32, with mixed precision (bfloat16 and float16)
and without XLA (`jit_compile: false`). Steady images/s = images / the median epoch after the first. Also: the
backend's measured matrix-product peak (float32 and bfloat16) and, where the backend can count
them (JAX), each model's forward FLOPs, for the achieved training FLOP/s. Every result is written to
the JSON file as soon as it is measured, so a run cut short keeps what it finished.

    KERAS_BACKEND=jax python -m benchmarks.backend_speed --output reports/benchmarks_gpu.json \
        [--images 4096] [--epochs 3] [--models a,b] [--variants float32,...] [--budget-seconds 400]

benchmarks.benchmark puts the figures into reports/benchmarks.md (its GPU section).
"""

import argparse
import dataclasses
import logging
import platform
import time
from pathlib import Path

import numpy as np

from stages.config import load_params, model_spec
from stages.data import encode_labels
from stages.files import write_json

log = logging.getLogger("backend_speed")

# name: (Keras dtype policy, jit_compile asked for, augmentation layers kept). Keras compiles no
# model with XLA that holds a random rotation, zoom or shift layer (they declare supports_jit False):
# as configured, every model here runs uncompiled, which on JAX means op by op. The other variants
# leave the augmentation out, to show what compiling and lower precision give.
VARIANTS = {
    "as_configured": ("float32", True, True),
    "float32_xla": ("float32", True, False),
    "mixed_bfloat16_xla": ("mixed_bfloat16", True, False),
    "float32_no_xla": ("float32", False, False),
    "mixed_float16_xla": ("mixed_float16", True, False),
}
MATMUL_SIZE = 8192
MATMUL_REPEATS = 10


def backend_description():
    import keras

    backend = keras.backend.backend()
    device = "unknown"
    if backend == "jax":
        import jax

        device = ", ".join(sorted({d.device_kind for d in jax.devices()}))
        version = jax.__version__
    elif backend == "torch":
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
        version = torch.__version__
    else:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        device = ", ".join(tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus) or "CPU"
        version = tf.__version__
    return {"backend": backend, "backend_version": version, "keras": keras.__version__, "device": device,
            "python": platform.python_version()}


def matmul_peak(dtype, size=MATMUL_SIZE, repeats=MATMUL_REPEATS):
    """FLOP/s of the best of 3 runs of `repeats` size x size products in dtype (float32 at full precision)."""
    import keras
    from keras import ops

    if keras.backend.backend() == "jax":
        import jax
        import jax.numpy as jnp

        a = jax.random.normal(jax.random.key(0), (size, size), dtype)
        b = jax.random.normal(jax.random.key(1), (size, size), dtype)
        product = jax.jit(lambda a, b: jnp.matmul(a, b, precision="highest"))

        def run():
            result = None
            for _ in range(repeats):
                result = product(a, b)
            result.block_until_ready()
    else:
        a = ops.cast(keras.random.normal((size, size), seed=0), dtype)
        b = ops.cast(keras.random.normal((size, size), seed=1), dtype)

        def run():
            result = None
            for _ in range(repeats):
                result = ops.matmul(a, b)
            ops.convert_to_numpy(result[:1, :1])
    run()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 * repeats / best


def forward_flops(model, input_shape):
    """FLOPs of one image's forward pass by XLA's cost analysis on the CPU (JAX backend only; else None).

    On the CPU: XLA's GPU cost analysis counts the convolutions it hands to cuDNN as 0 FLOPs.
    """
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    def forward(trainable, non_trainable, images):
        return model.stateless_call(trainable, non_trainable, images, training=False)[0]

    arguments = jax.device_put(([v.value for v in model.trainable_variables],
                                [v.value for v in model.non_trainable_variables],
                                jax.numpy.zeros((1, *input_shape), "float32")), jax.devices("cpu")[0])
    analysis = jax.jit(forward).lower(*arguments).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis["flops"]) if analysis and "flops" in analysis else None


def measure(spec, variant, images, labels, epochs):
    """Steady images/s of one model in one variant: fit for 1 + epochs epochs, timed per epoch."""
    import keras

    from stages.train import build_model, compile_model

    policy, jit_compile, augmentation = VARIANTS[variant]
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(spec.seed)
    if not augmentation:
        spec = dataclasses.replace(spec, network={**spec.network, "augmentation": None})
    model = build_model(spec, images.shape[1:])
    compile_model(model, spec.train["optimizer"], spec.train["learning_rate"], spec.dataset.num_classes, jit_compile)
    epoch_ends = []
    timer = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epoch_ends.append(time.perf_counter()))
    started = time.perf_counter()
    model.fit(images, labels, batch_size=spec.train["batch_size"], epochs=1 + epochs, shuffle=False,
              callbacks=[timer], verbose=0)
    epoch_seconds = np.diff([started, *epoch_ends])
    result = {"images_per_second": round(len(images) / float(np.median(epoch_seconds[1:])), 1),
              "first_epoch_seconds": round(float(epoch_seconds[0]), 2), "jit_compile": bool(model.jit_compile),
              "epoch_seconds": [round(float(s), 3) for s in epoch_seconds]}
    if variant == "float32_xla":
        flops = forward_flops(model, images.shape[1:])
        if flops:
            result["forward_flops_per_image"] = flops
    keras.config.set_dtype_policy("float32")
    return result


def synthetic_data(spec, count):
    """Random images in [0, 1] at the model's data size and labels of its classes."""
    rng = np.random.default_rng(spec.seed)
    size = spec.dataset.image_size
    images = rng.random((count, size, size, 3), dtype=np.float32)
    labels = encode_labels(rng.integers(0, spec.dataset.num_classes, count), spec.dataset.num_classes)
    return images, labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="JSON file to write")
    parser.add_argument("--images", type=int, default=4096, help="random images per epoch (default 4096)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the first (default 3)")
    parser.add_argument("--models", help="comma-separated models (default: all in params.yaml)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--matmul-size", type=int, default=MATMUL_SIZE, help=f"peak's matrix size (default {MATMUL_SIZE})")
    parser.add_argument("--budget-seconds", type=float, default=float("inf"),
                        help="start no new measurement after this long (what is done is kept)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    started = time.perf_counter()
    params = load_params()
    models = args.models.split(",") if args.models else list(params["models"])
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    specs = {name: model_spec(params, name) for name in models}
    output = Path(args.output)
    results = {"date": time.strftime("%Y-%m-%d"), "machine": backend_description(), "images": args.images,
               "epochs": args.epochs, "matmul_size": args.matmul_size, "peak": {}, "models": {}, "skipped": []}
    log.info("%s", results["machine"])
    for dtype in ("float32", "bfloat16"):
        results["peak"][dtype] = matmul_peak(dtype, args.matmul_size)
        log.info("matmul %s: %.1f TFLOP/s", dtype, results["peak"][dtype] / 1e12)
    write_json(output, results)
    # Every model at float32 first, then the other variants: a cut-short run still covers each model.
    for variant in variants:
        for name, spec in specs.items():
            if time.perf_counter() - started > args.budget_seconds:
                results["skipped"].append(f"{name} {variant}")
                continue
            if spec.builder == "transfer":
                spec.network["weights"] = None  # speed only: no weights to fetch
            images, labels = synthetic_data(spec, args.images)
            log.info("%s %s: %d images, batch %d", name, variant, len(images), spec.train["batch_size"])
            try:
                entry = measure(spec, variant, images, labels, args.epochs)
            except Exception as error:  # noqa: BLE001 (a variant the backend cannot run is reported, not fatal)
                entry = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
            entry["batch_size"] = spec.train["batch_size"]
            results["models"].setdefault(name, {})[variant] = entry
            log.info("%s %s: %s", name, variant, entry.get("images_per_second", entry.get("error")))
            results["seconds"] = round(time.perf_counter() - started, 1)
            write_json(output, results)
    log.info("wrote %s in %.0f s", output, time.perf_counter() - started)


if __name__ == "__main__":
    main()
