"""The point ops backed by the compiled kernels (CPU, and CUDA where built), with gradients.

The library is loaded on first use (`library.load`), so importing this module never fails; the
kernels validate shapes, indices and coordinates themselves and raise InvalidArgumentError.
Gradients: gather_point, group_point, three_interpolate (w.r.t. points) and gather_weight_net_sum
(w.r.t. points, hidden, kernel and bias) are differentiable; the search ops are not, as in the
original.
batch_norm_training is differentiable w.r.t. x, gamma and beta through y; its mean and variance
outputs are not (stop_gradient).
"""

import tensorflow as tf

from jsnet_tf.ops import library


def farthest_point_sample(npoint, xyz):
    return library.load().jsnet_farthest_point_sample(xyz, npoint=npoint)


def gather_point(xyz, idx):
    return library.load().jsnet_gather_point(xyz, idx)


def query_ball_point(radius, nsample, xyz, new_xyz):
    return tuple(library.load().jsnet_query_ball_point(xyz, new_xyz, radius=radius, nsample=nsample))


def group_point(points, idx):
    return library.load().jsnet_group_point(points, idx)


def knn_point(k, xyz, new_xyz):
    return tuple(library.load().jsnet_knn_point(xyz, new_xyz, k=k))


def three_nn(xyz1, xyz2):
    return tuple(library.load().jsnet_three_nn(xyz1, xyz2))


def three_interpolate(points, idx, weight):
    return library.load().jsnet_three_interpolate(points, idx, weight)


def gather_weight_net_sum(points, idx, hidden, kernel, bias):
    return library.load().jsnet_gather_weight_net_sum(points, idx, hidden, kernel, bias)


def batch_norm_training(x, gamma, beta, epsilon, relu):
    y, mean, variance = library.load().jsnet_batch_norm_training(x, gamma, beta, epsilon=epsilon, relu=relu)
    return y, tf.stop_gradient(mean), tf.stop_gradient(variance)


@tf.RegisterGradient("JsnetGatherPoint")
def _gather_point_grad(op, grad):
    return [library.load().jsnet_gather_point_grad(op.inputs[0], op.inputs[1], grad), None]


@tf.RegisterGradient("JsnetGroupPoint")
def _group_point_grad(op, grad):
    return [library.load().jsnet_group_point_grad(op.inputs[0], op.inputs[1], grad), None]


@tf.RegisterGradient("JsnetThreeInterpolate")
def _three_interpolate_grad(op, grad):
    points, idx, weight = op.inputs
    return [library.load().jsnet_three_interpolate_grad(points, idx, weight, grad), None, None]


@tf.RegisterGradient("JsnetGatherWeightNetSum")
def _gather_weight_net_sum_grad(op, grad):
    """The gathered points and the channel weights are made again, not kept from the forward pass."""
    points, idx, hidden, kernel, bias = op.inputs
    grads = library.load().jsnet_gather_weight_net_sum_grad(points, idx, hidden, kernel, bias, grad)
    return [grads[0], None, grads[1], grads[2], grads[3]]


@tf.RegisterGradient("JsnetBatchNormTraining")
def _batch_norm_training_grad(op, grad_y, grad_mean, grad_variance):
    """Through y only (the moments reach the caller through stop_gradient); the normalisation and
    the ReLU mask are recomputed from x and the saved moments."""
    del grad_mean, grad_variance
    x, gamma, beta = op.inputs
    _, mean, variance = op.outputs
    return list(
        library.load().jsnet_batch_norm_training_grad(
            grad_y, x, mean, variance, gamma, beta, epsilon=op.get_attr("epsilon"), relu=op.get_attr("relu")
        )
    )


for _name in ("JsnetFarthestPointSample", "JsnetQueryBallPoint", "JsnetKnnPoint", "JsnetThreeNN"):
    tf.no_gradient(_name)
