"""Trains JSNet: `python train.py --help`, the same as `jsnet-train` and `python -m jsnet_tf.train`
(jsnet_tf/train.py), kept at the repository root as the original's command."""

from jsnet_tf.train import cli

if __name__ == "__main__":
    cli()
