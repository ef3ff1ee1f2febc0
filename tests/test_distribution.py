"""Data-parallel training through Keras's distribution API: several devices, several processes, a lost process.

JAX only: these run in the README's second pass (KERAS_BACKEND=jax), each stage in processes of its own.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import REPO_ROOT, WITHOUT_TENSORFLOW, on_jax, read_train_report, run_python, save_params

from stages.config import load_params

pytestmark = [pytest.mark.backends, pytest.mark.slow,
              pytest.mark.skipif(not on_jax(), reason="Keras's distribution API trains on JAX: the JAX pass runs these")]

TWO_CPU_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
NAME = "digits_cnn"

# The train stage, checkpointing after every epoch (the first process writes the checkpoints).
EVERY_EPOCH_CHECKPOINTS = "import sys; from stages import resume, train; resume.CHECKPOINT_SECONDS = 0; train.main(sys.argv[1:2])"

# The same, SIGKILLed after the first batch of the epoch that follows `after` completed epochs.
KILLED_MID_EPOCH = """
import os, signal, sys
from stages import resume, train
after = int(sys.argv[2])
resume.CHECKPOINT_SECONDS = 0
def kill_mid_epoch(self, batch, logs=None):
    if self.state.epochs_done == after and batch == 0:
        os.kill(os.getpid(), signal.SIGKILL)
resume.EpochCheckpoint.on_train_batch_end = kill_mid_epoch
train.main(sys.argv[1:2])
"""


def use_data_parallel(project, epochs=4):
    params = load_params()
    params["train"]["distribution"] = "data_parallel"
    params["models"][NAME]["train"] = {"epochs": epochs}
    save_params(project, params)


def model_weights(project):
    return [np.asarray(w) for w in keras.models.load_model(project / "models" / NAME / "5.keras", compile=False).weights]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_on_two_processes(project, killed_after=None, timeout=300):
    """Run the train stage as processes 0 and 1 on 127.0.0.1; process 1 is SIGKILLed after `killed_after`
    epochs if given. Returns (return code, stderr) per process."""
    port, processes = free_port(), []
    for process_id in range(2):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(WITHOUT_TENSORFLOW), str(REPO_ROOT)]),
               "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
               "KERAS_DISTRIBUTION_PROCESS_ID": str(process_id)}
        command = (["-c", KILLED_MID_EPOCH, NAME, str(killed_after)] if killed_after is not None and process_id == 1
                   else ["-c", EVERY_EPOCH_CHECKPOINTS, NAME])
        processes.append(subprocess.Popen([sys.executable, *command], cwd=project, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = []
    for process in processes:
        _, stderr = process.communicate(timeout=timeout)
        results.append((process.returncode, stderr))
    return results


def digests(stderr_of_each):
    """The weights digest each process logged at the end of training."""
    return [re.search(r"holds weights (sha256:[0-9a-f]{64})", stderr).group(1) for stderr in stderr_of_each]


def test_two_devices_in_one_process_train_as_one_device(tiny_project):
    use_data_parallel(tiny_project)
    result = run_python("-m", "stages.train", NAME, cwd=tiny_project)
    assert result.returncode == 0, result.stderr[-3000:]
    one_device, one_device_report = model_weights(tiny_project), read_train_report(tiny_project, NAME)

    result = run_python("-m", "stages.train", NAME, cwd=tiny_project, env=TWO_CPU_DEVICES)
    assert result.returncode == 0, result.stderr[-3000:]
    report = read_train_report(tiny_project, NAME)

    assert (one_device_report["devices"], report["devices"], report["processes"]) == (1, 2, 1)
    assert report["distribution"] == "data_parallel" and report["backend"] == "jax"
    # The same global batches, split in two and summed back: equal up to floating-point order.
    for single, split in zip(one_device, model_weights(tiny_project), strict=True):
        np.testing.assert_allclose(split, single, atol=1e-4)
    assert report["best_val_loss"] == pytest.approx(one_device_report["best_val_loss"], abs=1e-4)


def test_two_processes_train_one_model_and_resume_together_after_one_is_killed(tiny_project):
    use_data_parallel(tiny_project, epochs=5)
    results = train_on_two_processes(tiny_project)
    assert [code for code, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    uninterrupted = digests(stderr for _, stderr in results)
    assert uninterrupted[0] == uninterrupted[1], "both processes end with the same weights"
    weights = model_weights(tiny_project)
    report = read_train_report(tiny_project, NAME)
    assert (report["processes"], report["devices"]) == (2, 2)
    assert "wrote models/" not in results[1][1], "only the first process writes the outputs"
    for output in ("models/digits_cnn/5.keras", "reports/train/digits_cnn/5.json", "reports/runs/digits_cnn/5.json"):
        (tiny_project / output).unlink()  # as DVC does before it runs a stage again

    (lead_code, lead_stderr), (killed_code, _) = train_on_two_processes(tiny_project, killed_after=2, timeout=120)
    assert killed_code == -signal.SIGKILL
    assert lead_code == 1 and "training across processes failed" in lead_stderr, lead_stderr[-3000:]
    assert "resume after epoch 2" in lead_stderr
    assert not (tiny_project / "models" / NAME / "5.keras").exists()
    assert json.loads((tiny_project / "models/resume" / NAME / "5" / "state.json").read_text())["epochs_done"] == 2

    results = train_on_two_processes(tiny_project)
    assert [code for code, _ in results] == [0, 0], results[0][1][-3000:]
    assert f"resuming from models/resume/{NAME}/5 after epoch 2" in results[0][1]
    assert digests(stderr for _, stderr in results) == uninterrupted, "bit-exact resume on both processes"
    for resumed, expected in zip(model_weights(tiny_project), weights, strict=True):
        np.testing.assert_array_equal(resumed, expected)


def test_a_batch_that_does_not_split_over_the_devices_is_refused(tiny_project):
    use_data_parallel(tiny_project)
    params = load_params()
    params["train"]["batch_size"] = 7
    save_params(tiny_project, params)
    result = run_python("-m", "stages.train", NAME, cwd=tiny_project, env=TWO_CPU_DEVICES)
    assert result.returncode == 1
    assert "batch_size 7 does not split evenly over the 2 devices of the data_parallel distribution" in result.stderr
