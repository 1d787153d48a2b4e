"""Evaluates JSNet the way the paper does: `python evaluate.py --help`, the same as `jsnet-evaluate` and `python -m jsnet_tf.evaluate`
(jsnet_tf/evaluate.py), kept at the repository root as the original's command."""

from jsnet_tf.evaluate import cli

if __name__ == "__main__":
    cli()
