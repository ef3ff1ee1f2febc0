"""dvclive's per-epoch curves from a Keras callback that runs on every backend.

dvclive.keras imports TensorFlow; this logs the same metric names (train/loss, eval/loss, ...)
through dvclive's own naming rule.
"""

import keras
from dvclive.utils import standardize_metric_name


class LiveCurves(keras.callbacks.Callback):
    """Logs each epoch's metrics to a dvclive Live, one step per epoch; with live None, nothing."""

    def __init__(self, live):
        super().__init__()
        self.live = live

    def on_epoch_end(self, epoch, logs=None):
        if self.live is None:
            return
        for name, value in (logs or {}).items():
            self.live.log_metric(standardize_metric_name(name, "dvclive.keras"), float(value))
        self.live.next_step()
