"""Which arithmetic the layers trace: the rewritten one without the big intermediates, or the plain
composition of the original graph.

  * ``fast`` (the default): the same functions, exact in real arithmetic, in fewer and smaller
    tensors (rounding differs at float32's last bits):
      - the first 1x1 convolution of a grouped MLP runs on the points before the gather:
        W [x_j - c, f_j] + b = (W_x x_j + W_f f_j) - (W_x c - b);
      - a convolution of a concatenation runs as split weights, W [a, b] = W_a a + W_b b, and a
        split part that is interpolated is mapped before the interpolation (3-NN interpolation is
        linear), a per-point attention scale after the map (W (s x) = s (W x));
      - PointConv scales the weight net's output by the density instead of the grouped features;
      - the depthwise decoding makes its features' channel weights (the weight net's last
        convolution), gathers, weights and sums the features over the neighbours in one op
        (`ops.gather_weight_net_sum`), which holds neither the channel weights nor the grouped
        features, not even for the gradient;
      - in inference (training=False) every batch norm is folded into the convolution (or the
        sum pool's bias) before it;
      - in training, a per-channel float32 batch norm on one replica is one op with the ReLU after
        it (`ops.batch_norm_training`, called as `bn(x, training=True, relu=True)` by `ConvBlock`), whose
        gradient recomputes what it needs from its input and the batch moments.
    Training-mode batch norms see the same values as in the plain arithmetic (the same moments,
    to float32 rounding); the variables are the same.
  * ``plain``: the original graph's composition, op for op (concatenations, grouped features,
    batch norms as separate ops, TensorFlow's fused batch-norm kernel then a ReLU in training);
    the reference of the fast one in tests and benchmarks.

Chosen when a layer is called (for a ``tf.function``, when it is traced): the innermost
``use_arithmetic(...)`` block, else ``set_arithmetic(...)``, else the environment variable
``JSNET_ARITHMETIC`` (how a user switches any program: ``JSNET_ARITHMETIC=plain jsnet-evaluate ...``),
else ``fast``.
"""

from jsnet_tf.errors import UserError
from jsnet_tf.scoped_choice import ScopedChoice

ARITHMETICS = ("fast", "plain")
ENVIRONMENT_VARIABLE = "JSNET_ARITHMETIC"


class UnknownArithmeticError(UserError, ValueError):
    """An unknown arithmetic name."""


_CHOICE = ScopedChoice("arithmetic", ARITHMETICS, ENVIRONMENT_VARIABLE, lambda: "fast", UnknownArithmeticError)


def arithmetic():
    """The name of the arithmetic the next layer call traces."""
    return _CHOICE.current()


def fast():
    return arithmetic() == "fast"


def set_arithmetic(name):
    """Selects the arithmetic process-wide; None goes back to the default ($JSNET_ARITHMETIC, else fast)."""
    _CHOICE.set(name, "set_arithmetic")


def use_arithmetic(name):
    """Uses `name` for the layers called (or traced) inside the block."""
    return _CHOICE.use(name, "use_arithmetic")
