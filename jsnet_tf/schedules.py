"""The paper's training schedules: staircase learning-rate decay with a floor, and the batch-norm
decay schedule (the original's train.py).

    decay_steps = int(12500 / (batch_size / 24))            (decay every 12,500 steps at batch 24)
    lr(step)    = max(lr0 * rate ** floor(step / decay_steps), 1e-5)
    bn(step)    = min(0.99, 1 - 0.5 * 0.5 ** floor(step / decay_steps))
"""

import keras
import tensorflow as tf

REFERENCE_DECAY_STEPS = 12500
REFERENCE_BATCH_SIZE = 24


def decay_steps_for(batch_size, reference_steps=REFERENCE_DECAY_STEPS, reference_batch=REFERENCE_BATCH_SIZE):
    """Steps between decays at `batch_size`: the same number of samples as 12,500 steps at 24."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return max(1, int(reference_steps / (batch_size / reference_batch)))


@keras.saving.register_keras_serializable(package="jsnet_tf")
class StaircaseDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = max(initial * rate ** floor(step / decay_steps), minimum)."""

    def __init__(self, initial=1e-3, decay_steps=REFERENCE_DECAY_STEPS, rate=0.5, minimum=1e-5):
        self.initial, self.decay_steps, self.rate, self.minimum = initial, decay_steps, rate, minimum

    def __call__(self, step):
        stage = tf.floor(tf.cast(step, tf.float32) / self.decay_steps)
        return tf.maximum(self.initial * tf.pow(self.rate, stage), self.minimum)

    def get_config(self):
        return {"initial": self.initial, "decay_steps": self.decay_steps, "rate": self.rate, "minimum": self.minimum}


def bn_decay(step, decay_steps, initial=0.5, rate=0.5, clip=0.99):
    """The batch-norm moving-average decay at `step`: min(clip, 1 - initial * rate ** floor(step / decay_steps))."""
    stage = tf.floor(tf.cast(step, tf.float32) / decay_steps)
    return tf.minimum(clip, 1.0 - initial * tf.pow(rate, stage))
