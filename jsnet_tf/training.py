"""The JSNet training loop: tf.distribute, the paper's schedules, checkpoints, exact resumption.

One `Trainer` per (config, fold, workdir); the config's dataset (its task, jsnet_tf.tasks) gives the
training and validation data (`Task.training_data`): S3DIS epochs follow `data.sampling` (by default
every stride-0.5 block of every training room with fresh points, as the original), ShapeNet part
epochs are the `train` split, ScanNet epochs the blocks of its train scenes; every epoch is
deterministic for (seed, epoch). Every step sets the BN decay and the dropout seed from the global
step before the replicas run, so an epoch replays identically.

Model selection never looks at the test data unless told to in as many words: validation, the
`best/` checkpoint and early stopping use the validation rooms carved from the training data
(`data.validation_rooms`; ShapeNet: the `val` split), or are off when there are none (the
original's way: it keeps the last epoch). `train.select_on_test_area = true` validates on the
test area instead; the run records it (`run.json`), and evaluate.py / predict / export refuse its
`best/` weights unless their own flag allows it.
A checkpoint (model, optimizer state and step, epoch) is written after every epoch; a new Trainer
on the same workdir resumes after the last complete epoch, so an interruption anywhere loses at
most that epoch's progress and the resumed run reaches the same weights as an uninterrupted one.
"""

import copy
import json
import math
import os
import pathlib
import time

import keras
import tensorflow as tf

from jsnet_tf import checkpoints, schedules, tasks
from jsnet_tf import config as config_lib
from jsnet_tf.errors import UserError
from jsnet_tf.files import write_text_atomic
from jsnet_tf.losses import jsnet_loss
from jsnet_tf.model import build_model


class TrainingError(UserError, RuntimeError):
    """Training cannot start or continue (bad workdir, incompatible checkpoint, non-finite loss)."""


TENSORBOARD_RUNS = ("train", "validation")  # <workdir>/tensorboard/<run>: the same tags in each


def make_strategy():
    """MultiWorkerMirroredStrategy when TF_CONFIG describes a cluster, else MirroredStrategy over
    the visible GPUs (the CPU when there is none)."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy()


def _task_id(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return getattr(resolver, "task_id", 0) or 0


def _is_chief(strategy):
    """True for the one process that writes the run's outputs (always, without a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and resolver.task_id == 0)


class Trainer:
    """Trains JSNet on the prepared data of `cfg["data"]["data_dir"]`; `fold` is what the run holds
    out (S3DIS: its test area; None for datasets with fixed splits)."""

    def __init__(self, cfg, workdir, fold=None, strategy=None):
        # The run records absolute paths: evaluate and predict find its data from any folder.
        self.cfg, self.fold = copy.deepcopy(cfg), fold
        self.cfg["data"]["data_dir"] = os.path.abspath(cfg["data"]["data_dir"])
        self.workdir = pathlib.Path(workdir).absolute()
        self.train_cfg = cfg["train"]
        self.task = tasks.for_config(cfg)
        self.data = self._plan_data()
        self.selection = self.data.record
        self._check_workdir()
        self.strategy = strategy or make_strategy()
        # Under MultiWorkerMirroredStrategy every worker saves (saving is collective), but only the
        # chief into the workdir; the others keep their copies in workers/<index>.
        self.output_dir = self.workdir if _is_chief(self.strategy) else self.workdir / "workers" / str(_task_id(self.strategy))
        self.global_batch = self.train_cfg["batch_size"]
        replicas = self.strategy.num_replicas_in_sync
        if self.global_batch % replicas:
            raise TrainingError(
                f"train.batch_size {self.global_batch} does not split evenly over {replicas} replicas: "
                f"use a multiple of {replicas}"
            )
        self.decay_steps = schedules.decay_steps_for(self.global_batch, self.train_cfg["reference_decay_steps"])
        self.seed_variable = tf.Variable([self.train_cfg["seed"], 0], dtype=tf.int64, trainable=False)
        keras.utils.set_random_seed(self.train_cfg["seed"])  # the same initial weights for a seed
        with self.strategy.scope():
            try:
                self.model = build_model(cfg)
                self.model.build((None, cfg["data"]["num_points"], cfg["model"]["input_channels"]))
            except ValueError as error:  # e.g. an encoder level sampling more points than the block has
                raise TrainingError(f"the config's model cannot be built: {error}") from None
            self.model.use_stateless_dropout(self.seed_variable)
            self.learning_rate = schedules.StaircaseDecay(
                self.train_cfg["learning_rate"], self.decay_steps, self.train_cfg["decay_rate"], self.train_cfg["min_learning_rate"]
            )
            self.optimizer = keras.optimizers.Adam(self.learning_rate)
            self.optimizer.build(self.model.trainable_variables)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        # Variables listed by path: TensorFlow's checkpoint graph does not descend into the Keras
        # lists and dicts holding the layers, so tracking the model object would miss weights.
        # (Keys drop the owner's name, which Keras makes unique per process: "adam", "adam_1".)
        self.checkpoint = tf.train.Checkpoint(
            model=checkpoints.model_variables(self.model),
            optimizer={v.path.split("/", 1)[1]: v for v in self.optimizer.variables},
            epoch=self.epoch,
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.output_dir / "checkpoints", max_to_keep=self.train_cfg["keep_checkpoints"]
        )
        self.best_manager = tf.train.CheckpointManager(self.checkpoint, self.output_dir / "best", max_to_keep=1)
        self._restore()
        # Every check has passed: only now is anything written.
        self.output_dir.mkdir(parents=True, exist_ok=True)
        checkpoints.write_run_files(self.workdir, self.cfg, area=self.fold, extra=self.selection)
        self._step_fn = self._validation_fn = None
        # TensorBoard: one run per split (tensorboard/train, tensorboard/validation) writing the same
        # tags ("loss/total", "accuracy"), so TensorBoard overlays the two curves. Only the chief
        # writes; a resumed run adds event files to the same folders.
        chief = _is_chief(self.strategy)
        self.writers = {
            split: tf.summary.create_file_writer(str(self.workdir / "tensorboard" / split)) if chief
            else tf.summary.create_noop_writer()
            for split in TENSORBOARD_RUNS if split == "train" or self.has_validation
        }

    # ------------------------------------------------------------------------------ set-up

    def _check_workdir(self):
        """Refuses an unwritable workdir and one holding a run of another architecture or other
        data settings (without writing anything)."""
        existing = next(p for p in (self.workdir, *self.workdir.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            reason = "not a folder" if not existing.is_dir() else "permission denied"
            raise TrainingError(f"workdir {self.workdir} is not writable: {existing}: {reason}")
        recorded = self.workdir / "architecture.json"
        current = checkpoints.architecture(self.cfg)
        if recorded.exists():
            previous = json.loads(recorded.read_text())
            if previous != current:
                raise TrainingError(
                    f"workdir {self.workdir} holds a run of another architecture ({config_lib.differences(previous, current)}): "
                    "use another --workdir"
                )
        previous = checkpoints.run_record(self.workdir)
        current = {"area": self.fold, **self.selection} if self.fold is not None else self.selection
        if previous and previous != {k: v for k, v in current.items() if v is not None}:
            raise TrainingError(
                f"workdir {self.workdir} holds a run with other data settings ({config_lib.differences(previous, current)}): "
                "use another --workdir, or the settings it was started with"
            )

    def _plan_data(self):
        """Checks the config and the data (the task's `training_data`) before anything is written;
        returns the plan (jsnet_tf.tasks.base.TrainingData)."""
        t = self.train_cfg
        try:
            self.task.check_config(self.cfg)
            data = self.task.training_data(self.cfg, self.fold)
        except (config_lib.ConfigError, tasks.TaskError) as error:
            raise TrainingError(str(error)) from None
        if t["early_stopping_patience"] > 0 and data.validation_dataset is None:
            raise TrainingError(
                "train.early_stopping_patience needs validation data: set data.validation_rooms (a fraction such as 0.1, "
                "or room names) to carve it from the training data; train.select_on_test_area=true would choose the "
                "stopping point on the test area, the data the results are reported on"
            )
        return data

    @property
    def has_validation(self):
        """Whether validation data exists: validation rooms, a validation split, or (when allowed
        in as many words) the test area."""
        return self.data.validation_dataset is not None

    def _restore(self):
        """Resumes after the last complete epoch; a fresh run in a folder holding converted
        weights (python -m jsnet_tf.convert) starts from them."""
        latest = self.manager.latest_checkpoint
        if latest is None:
            converted = tf.train.latest_checkpoint(str(self.workdir / "weights"))
            if converted:
                try:
                    checkpoints.restore_weights(self.model, converted)
                except checkpoints.CheckpointError as error:
                    raise TrainingError(str(error)) from None
            return
        try:
            self.checkpoint.restore(latest).assert_consumed()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            raise TrainingError(f"checkpoint {latest} does not fit this model: {error}") from None

    # ------------------------------------------------------------------------------ steps

    def _make_step(self):
        replicas = self.strategy.num_replicas_in_sync
        model, optimizer = self.model, self.optimizer
        disc_weight, ignore_label = self.train_cfg["disc_weight"], self.task.ignore_label

        def replica_step(batch):
            with tf.GradientTape() as tape:
                out = model(batch["points"], training=True)
                losses = jsnet_loss(
                    out["semantic_logits"], out["embeddings"], batch["semantic"], batch["instance"], disc_weight=disc_weight,
                    ignore_label=ignore_label,
                )
                scaled = losses["total"] / replicas  # the replicas' means add up to the global mean
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return losses

        @tf.function
        def step(dist_batch):
            iteration = tf.cast(optimizer.iterations, tf.int64)
            model.set_bn_decay(
                schedules.bn_decay(
                    iteration,
                    self.decay_steps,
                    self.train_cfg["bn_init_decay"],
                    self.train_cfg["bn_decay_rate"],
                    self.train_cfg["bn_decay_clip"],
                )
            )
            self.seed_variable.assign(tf.stack([tf.constant(self.train_cfg["seed"], tf.int64), iteration * 2]))
            per_replica = self.strategy.run(replica_step, args=(dist_batch,))
            return {
                k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()
            }

        return step

    def dataset(self, epoch):
        """The training batches of one epoch (deterministic for (seed, epoch))."""
        return self.data.dataset(epoch, self.global_batch)

    def validation_dataset(self):
        """The validation batches (the task's: validation rooms, a val split, or the test area's
        blocks when train.select_on_test_area allows it)."""
        if self.data.validation_dataset is None:
            raise TrainingError("no validation data: set data.validation_rooms")
        return self.data.validation_dataset(self.global_batch)

    def _make_validation_step(self):
        """One validation batch -> (total loss, correct points, labelled points), compiled once for
        any batch size (eager calls of the network are many times slower)."""
        model, disc_weight, ignore_label = self.model, self.train_cfg["disc_weight"], self.task.ignore_label
        num_points, channels = self.cfg["data"]["num_points"], self.cfg["model"]["input_channels"]

        @tf.function(input_signature=[
            tf.TensorSpec([None, num_points, channels], tf.float32),
            tf.TensorSpec([None, num_points], tf.int32),
            tf.TensorSpec([None, num_points], tf.int32),
        ])
        def step(points, semantic, instance):
            out = model(points, training=False)
            losses = jsnet_loss(out["semantic_logits"], out["embeddings"], semantic, instance, disc_weight=disc_weight,
                                ignore_label=ignore_label)
            predicted = tf.argmax(out["semantic_logits"], axis=-1, output_type=tf.int32)
            if ignore_label is None:
                return losses["total"], tf.reduce_sum(tf.cast(predicted == semantic, tf.int64)), tf.size(predicted)
            labelled = semantic != ignore_label
            right = tf.logical_and(labelled, predicted == semantic)
            return losses["total"], tf.reduce_sum(tf.cast(right, tf.int64)), tf.reduce_sum(tf.cast(labelled, tf.int32))

        return step

    def validate(self):
        """Semantic accuracy and mean loss on the validation data (`validation_dataset`)."""
        d = self.cfg["data"]
        dataset = self.validation_dataset()
        if self._validation_fn is None:
            self._validation_fn = self._make_validation_step()
        correct = total = 0
        loss_sum = batches = 0.0
        for batch in dataset:
            loss, right, points = self._validation_fn(batch["points"], batch["semantic"], batch["instance"])
            correct += int(right)
            total += int(points)
            loss_sum += float(loss)
            batches += 1
        if total == 0:
            raise TrainingError(f"no validation blocks in {d['data_dir']}")
        return {"accuracy": correct / total, "loss": loss_sum / batches}

    # ------------------------------------------------------------------------------ loop

    def describe(self):
        """One line on the epoch, the validation and the model selection (printed at start)."""
        return self.data.describe(self.global_batch)

    def fit(self, epochs=None, stop_after_steps=None, verbose=1, validate=True):
        """Trains until `epochs` (default: the config's) are complete; returns the per-epoch mean
        losses of this call (with the validation accuracy and loss when `validate` and there is
        validation data; they also go to TensorBoard and `<workdir>/metrics.json`).
        `stop_after_steps` ends early (tests of the resumption)."""
        epochs = self.train_cfg["epochs"] if epochs is None else epochs
        validate = validate and self.has_validation
        if verbose:
            print(self.describe(), flush=True)
        if self._step_fn is None:
            self._step_fn = self._make_step()
        history = []
        steps_done = 0
        if validate:
            self._validate_restored_epoch(verbose)
        if validate and self._stopped_early():
            if verbose:
                print(f"{self.output_dir}: stopped early before; nothing to train", flush=True)
            return history
        while int(self.epoch.numpy()) < epochs:
            epoch = int(self.epoch.numpy())
            dataset = self.strategy.experimental_distribute_dataset(self.dataset(epoch))
            sums, count, started = {}, 0, time.time()
            bar = keras.utils.Progbar(self._expected_steps(), stateful_metrics=["loss", "sem", "disc"], verbose=verbose)
            for batch in dataset:
                losses = {k: float(v) for k, v in self._step_fn(batch).items()}
                if not all(math.isfinite(v) for v in losses.values()):
                    raise TrainingError(
                        f"non-finite loss {losses} at step {int(self.optimizer.iterations.numpy())}, epoch {epoch}; "
                        f"the last good checkpoint is {self.manager.latest_checkpoint or '(none yet)'}"
                    )
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                step = int(self.optimizer.iterations.numpy())
                self._log_step(step, losses)
                bar.add(1, [("loss", losses["total"]), ("sem", losses["sem"]), ("disc", losses["disc"])])
                steps_done += 1
                if stop_after_steps is not None and steps_done >= stop_after_steps:
                    return history
            bar.update(count, finalize=True)
            if count == 0:
                raise TrainingError(f"epoch {epoch} produced no batch of {self.global_batch} blocks: too little training data")
            means = {k: v / count for k, v in sums.items()}
            means["steps"] = count
            self.epoch.assign_add(1)
            self.manager.save(checkpoint_number=epoch + 1)
            self.writers["train"].flush()  # the epoch's curves are on disk with its checkpoint
            summary = f"epoch {epoch + 1}/{epochs}: loss {means['total']:.4f}"
            stop = False
            if validate:
                held_out = self.validate()
                means.update({f"val_{k}": v for k, v in held_out.items()})
                self._log_validation(held_out)
                summary += f", validation accuracy {held_out['accuracy']:.3f}, loss {held_out['loss']:.4f}"
                stop = self._track_best(epoch + 1, held_out["loss"])
            history.append(means)
            self._record(epoch + 1, means)
            if verbose:
                print(f"{summary} ({time.time() - started:.0f} s)", flush=True)
            if stop:
                if verbose:
                    print(f"early stop: no better validation loss in {self.train_cfg['early_stopping_patience']} epochs", flush=True)
                break
        return history

    def _track_best(self, epoch, loss):
        """Keeps the checkpoint of the lowest validation loss in <workdir>/best; True when early
        stopping (train.early_stopping_patience > 0) says to stop."""
        path = self.output_dir / "best.json"
        best = json.loads(path.read_text()) if path.exists() else None
        if best is None or loss < best["loss"]:
            self.best_manager.save(checkpoint_number=epoch)
            best = {"epoch": epoch, "loss": loss}
            write_text_atomic(path, json.dumps(best) + "\n")
        patience = self.train_cfg["early_stopping_patience"]
        return patience > 0 and epoch - best["epoch"] >= patience

    def _validate_restored_epoch(self, verbose):
        """After an interruption between an epoch's checkpoint and its validation, validates the
        restored weights for that epoch, so best/ and early stopping resume exactly."""
        epoch = int(self.epoch.numpy())
        path = self.output_dir / "metrics.json"
        records = json.loads(path.read_text()) if path.exists() else []
        if epoch == 0 or any(r["epoch"] == epoch and "val_loss" in r for r in records):
            return
        held_out = self.validate()
        previous = next((r for r in records if r["epoch"] == epoch), {"epoch": epoch})
        self._record(epoch, {**{k: v for k, v in previous.items() if k != "epoch"},
                             **{f"val_{k}": v for k, v in held_out.items()}})
        self._log_validation(held_out)
        self._track_best(epoch, held_out["loss"])
        if verbose:
            print(f"epoch {epoch}: validated after the interruption, loss {held_out['loss']:.4f}", flush=True)

    def _stopped_early(self):
        """True when a previous call stopped early (re-running train.py must not train on and
        move best/)."""
        path = self.output_dir / "best.json"
        patience = self.train_cfg["early_stopping_patience"]
        if patience <= 0 or not path.exists():
            return False
        return int(self.epoch.numpy()) - json.loads(path.read_text())["epoch"] >= patience

    def _expected_steps(self):
        """The progress bar's length: exact where the data says so; for random corners the last
        epoch's step count (blocks with too few points are dropped), unknown before."""
        if self.data.exact_steps:
            return self.data.epoch_blocks // self.global_batch
        path = self.output_dir / "metrics.json"
        records = json.loads(path.read_text()) if path.exists() else []
        return records[-1].get("steps") if records else None

    def _record(self, epoch, means):
        """Appends an epoch's numbers to <workdir>/metrics.json (rewritten atomically)."""
        path = self.output_dir / "metrics.json"
        records = json.loads(path.read_text()) if path.exists() else []
        records = [r for r in records if r["epoch"] < epoch] + [{"epoch": epoch, **means}]
        write_text_atomic(path, json.dumps(records, indent=2) + "\n")

    def _log_step(self, step, losses):
        """A training step's losses (loss/total, loss/sem, ...) and schedules, in the train run."""
        with self.writers["train"].as_default(step=step):
            for k, v in losses.items():
                tf.summary.scalar(f"loss/{k}", v)
            tf.summary.scalar("learning_rate", float(self.learning_rate(step - 1)))
            tf.summary.scalar("bn_decay", float(self.model.bn_decay.variable.numpy()))

    def _log_validation(self, held_out):
        """`validate()`'s numbers at the current step, in the validation run, under the tags of the
        training curves they overlay (its loss is the total loss: loss/total)."""
        with self.writers["validation"].as_default(step=int(self.optimizer.iterations.numpy())):
            tf.summary.scalar("loss/total", held_out["loss"])
            tf.summary.scalar("accuracy", held_out["accuracy"])
        self.writers["validation"].flush()
