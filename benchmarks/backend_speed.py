"""What the benchmark measures on whichever Keras backend is installed, TensorFlow or not: the machine,
its matrix-product peak, a model's forward FLOPs and its training speed in each variant below, fitted
on random images (speed does not depend on the pixels) as the train stage builds and compiles it."""

import dataclasses
import os
import platform
import time
import timeit

import numpy as np

from stages.config import load_params, model_spec
from stages.data import encode_labels

# name: (Keras dtype policy, jit_compile, augmentation layers kept). On TensorFlow, Keras compiles no
# model holding a random rotation, zoom or shift layer with XLA; on JAX the pipeline lets XLA compile
# them (stages/models/augmentation.py): as_configured against augmented_no_xla measures what that gives.
VARIANTS = {
    "as_configured": ("float32", True, True),
    "augmented_no_xla": ("float32", False, True),
    "float32_xla": ("float32", True, False),
    "mixed_bfloat16_xla": ("mixed_bfloat16", True, False),
    "float32_no_xla": ("float32", False, False),
    "mixed_float16_xla": ("mixed_float16", True, False),
}


def machine_description():
    """CPU, cores, memory, GPUs, the Keras backend and the versions, as this process sees them."""
    import keras

    from stages.backend import cpu_name, gpu_names

    cpu, backend, gpus = cpu_name(), keras.backend.backend(), gpu_names()
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "gpus": gpus, "device": ", ".join(gpus) or f"CPU only: {cpu}",
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(), "keras": keras.__version__, "backend": backend,
            "backend_version": __import__(backend).__version__}


def matmul_peak(dtype="float32", size=8192, repeats=10):
    """FLOP/s of the best of 3 runs of `repeats` size x size matrix products (float32 at full precision)."""
    import keras
    from keras import ops

    if keras.backend.backend() == "jax":
        import jax

        product = jax.jit(lambda a, b: jax.numpy.matmul(a, b, precision="highest"))
    else:
        product = ops.matmul
    a = ops.cast(keras.random.normal((size, size), seed=0), dtype)
    b = ops.cast(keras.random.normal((size, size), seed=1), dtype)

    def run():
        for _ in range(repeats):
            result = product(a, b)
        ops.convert_to_numpy(result[:1, :1])

    run()
    return 2 * size**3 * repeats / min(timeit.repeat(run, repeat=3, number=1))


def forward_flops(model, input_shape):
    """FLOPs of one image's forward pass: TensorFlow's profiler on the inference graph, or XLA's cost
    analysis on the CPU with JAX (on a GPU it counts cuDNN's convolutions as 0); None elsewhere."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        function = tf.function(lambda images: model(images, training=False))
        graph = function.get_concrete_function(tf.TensorSpec((1, *input_shape), tf.float32)).graph
        builder = tf.compat.v1.profiler.ProfileOptionBuilder
        options = builder(builder.float_operation()).with_empty_output().build()
        return float(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)
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


def model_forward_flops(name):
    """forward_flops of a params.yaml model, built by its builder at its dataset's image size."""
    from stages.train import build_model

    spec = model_spec(load_params(), name)
    shape = (spec.dataset.image_size, spec.dataset.image_size, 3)
    return forward_flops(build_model(spec, shape), shape)


def measure(spec, variant, images, labels, epochs):
    """Steady images/s of one model in one variant: fit for 1 + epochs epochs, timed per epoch."""
    import keras

    from stages.train import build_model, compile_model

    policy, jit_compile, augmentation = VARIANTS[variant]
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(spec.seed)
    network = {**spec.network, **({} if augmentation else {"augmentation": None})}
    if spec.builder == "transfer":
        network["weights"] = None  # random weights: no file to fetch
    spec = dataclasses.replace(spec, network=network)
    model = build_model(spec, images.shape[1:])
    compile_model(model, spec.train["optimizer"], spec.train["learning_rate"], spec.dataset.num_classes, jit_compile)
    epoch_ends = []
    timer = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epoch_ends.append(time.perf_counter()))
    started = time.perf_counter()
    model.fit(images, labels, batch_size=spec.train["batch_size"], epochs=1 + epochs, shuffle=False,
              callbacks=[timer], verbose=0)
    epoch_seconds = np.diff([started, *epoch_ends])
    result = {"images_per_second": round(len(images) / float(np.median(epoch_seconds[1:])), 1),
              "jit_compile": bool(model.jit_compile), "epoch_seconds": [round(float(s), 3) for s in epoch_seconds]}
    if variant == "float32_xla":
        result["forward_flops_per_image"] = forward_flops(model, images.shape[1:])
    keras.config.set_dtype_policy("float32")
    return result


def random_split(spec, count):
    """`count` random images in [0, 1] of spec's input size, and labels of its classes."""
    rng = np.random.default_rng(spec.seed)
    size, classes = spec.dataset.image_size, spec.dataset.num_classes
    return (rng.random((count, size, size, 3), dtype=np.float32),
            encode_labels(rng.integers(0, classes, count), classes))
