"""The Keras backend a stage runs on, and the few things Keras leaves to each backend.

params.yaml picks the backend (`train.backend`: tensorflow or jax), so DVC sees a change of backend
as a change of parameters and `dvc exp run -S train.backend=jax` trains every model again on JAX.
Keras reads its backend once, when it is first imported, so a stage calls use_backend() before
anything imports Keras. With JAX, TensorFlow is never imported.
"""

import os
import platform
import sys
from pathlib import Path


class BackendError(RuntimeError):
    """A backend that cannot be used in this process."""


def use_backend(name):
    """Make Keras run on `name`; call it before the first `import keras`.

    On JAX it also asks XLA for deterministic GPU kernels (a no-op on the CPU), so the same
    parameters, data and machine give the same weights, as TensorFlow's op determinism does.
    """
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != name:
            raise BackendError(f"Keras already runs on {keras.backend.backend()} in this process, not {name}: "
                               "start a new process (stages read train.backend before importing Keras)")
        return
    os.environ["KERAS_BACKEND"] = name
    if name == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_gpu_deterministic_ops" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()


def backend_name():
    import keras

    return keras.backend.backend()


def versions():
    """{library: version} of Keras and the backend under it, for run facts and resume fingerprints."""
    import keras

    name = keras.backend.backend()
    backend = __import__(name)
    return {"keras": keras.__version__, name: backend.__version__}


def host_copy(variable, out=None):
    """A NumPy copy of a Keras variable's value, into `out` when given (an array of its shape and dtype);
    under data parallel over processes, this process's replica."""
    import numpy as np

    value = variable.value
    if getattr(value, "is_fully_addressable", True) is False:  # a JAX array that spans processes
        value = np.asarray(value.addressable_data(0))
    else:
        # variable.numpy(), not np.array(variable): that takes Keras's slow conversion path on TensorFlow,
        # 0.8 s against 0.06 s for ResNet50's 270 MiB of weights and optimizer state, every epoch.
        value = variable.numpy()
    if out is None:
        return np.array(value)
    np.copyto(out, value)
    return out


def cpu_name():
    """The CPU's model name (Linux's /proc/cpuinfo, else what Python knows). Run facts record it: the
    same code, parameters and data gave other weights on another CPU (docs/training.md#reproducibility)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    return name or platform.processor() or platform.machine() or "unknown CPU"


def gpu_names():
    """The names of the GPUs the backend sees; empty on a machine without one."""
    if backend_name() == "jax":
        import jax

        return [device.device_kind for device in jax.devices() if device.platform == "gpu"]
    import tensorflow as tf

    return [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]


def make_deterministic():
    """TensorFlow: deterministic kernels (which Keras then never compiles with XLA). JAX: see use_backend."""
    if backend_name() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def gradient(function, x):
    """The gradient of function(x).sum() with respect to x; Keras has no backend-neutral one."""
    if backend_name() == "jax":
        import jax

        return jax.grad(lambda x: function(x).sum())(x)
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(function(x))
    return tape.gradient(total, x)
