"""JSNet assembled from a layer table (paper Fig. 2; the original's models/JISS/model.py).

Shared encoder (PointNet++ set abstraction, then three PointConv encodings), two decoders of the
same shape (semantic, instance: three depthwise PointConv decodings and one feature propagation),
PCFF on each decoder, and JISS joining them. Input (B, N, 9): xyz (block-centred), rgb, xyz
normalised by the room; output {"semantic_logits": (B, N, classes), "embeddings": (B, N, E)}.

Ablations (paper Table 4): `backbone="pointnet2"` is the base network (4 set abstractions,
4 feature propagations); `pcff=False` feeds only the last decoder level to the head conv;
`instance_fusion` / `semantic_fusion` switch the two JISS branches.

Neighbourhoods that both decoders use (3-NN interpolation weights, kNN of each level in itself)
are computed once per forward pass; the original computed them in each decoder.
"""

import copy

import keras

from jsnet_tf import ops
from jsnet_tf.layers import (
    JISS,
    PCFF,
    BatchNormDecay,
    DepthwiseDecoding,
    FeaturePropagation,
    PointBatchNorm,
    PointConvEncoding,
    SetAbstraction,
    interpolation_weights,
)

# The S3DIS network of the paper (reference page, "Network"): sigma is a multiple of `sigma`.
ENCODER = (
    {"npoint": 1024, "radius": 0.1, "k": 32, "mlp": [32, 32, 64]},
    {"npoint": 256, "radius": 0.2, "sigma_scale": 2, "k": 32, "mlp": [64, 64, 128]},
    {"npoint": 64, "radius": 0.4, "sigma_scale": 4, "k": 32, "mlp": [128, 128, 256]},
    {"npoint": 32, "radius": 0.8, "sigma_scale": 8, "k": 32, "mlp": [256, 256, 512]},
)
DECODER = (
    {"k": 16, "mlp": [512, 512]},
    {"k": 16, "mlp": [256, 256]},
    {"k": 16, "mlp": [256, 128]},
    {"mlp": [128, 128, 128]},
)
BACKBONES = ("pointconv", "pointnet2")


@keras.saving.register_keras_serializable(package="jsnet_tf")
class JSNet(keras.Model):
    """JSNet. Call: points (B, N, input_channels) -> dict of semantic_logits and embeddings.

    Args:
      num_classes: semantic classes (13 for S3DIS, 50 parts for ShapeNet part).
      input_channels: channels per point; the first three are xyz.
      embedding_dim: instance embedding size (5).
      encoder, decoder: the layer table (see ENCODER, DECODER).
      sigma: PointConv kernel-density bandwidth unit (0.05).
      dropout: rate before both output convolutions (0.5).
      backbone, pcff, instance_fusion, semantic_fusion: ablation switches.
    """

    def __init__(
        self,
        num_classes=13,
        input_channels=9,
        embedding_dim=5,
        encoder=ENCODER,
        decoder=DECODER,
        sigma=0.05,
        dropout=0.5,
        backbone="pointconv",
        pcff=True,
        instance_fusion=True,
        semantic_fusion=True,
        **kwargs,
    ):
        kwargs.setdefault("name", "jsnet")
        super().__init__(**kwargs)
        if backbone not in BACKBONES:
            raise ValueError(f"JSNet: unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        if len(encoder) != 4 or len(decoder) != 4:
            raise ValueError("JSNet: the layer table needs 4 encoder and 4 decoder levels")
        if input_channels < 3:
            raise ValueError(f"JSNet: input_channels must be at least 3 (xyz), got {input_channels}")
        self.num_classes, self.input_channels, self.embedding_dim = num_classes, input_channels, embedding_dim
        self.encoder_table, self.decoder_table = copy.deepcopy(list(encoder)), copy.deepcopy(list(decoder))
        self.sigma, self.dropout_rate, self.backbone = sigma, dropout, backbone
        self.pcff_enabled, self.instance_fusion, self.semantic_fusion = pcff, instance_fusion, semantic_fusion

        self.encoders = [self._encoder(level, spec) for level, spec in enumerate(self.encoder_table, start=1)]
        self.decoders = {branch: self._decoder(branch) for branch in ("sem", "ins")}
        self.pcffs = {branch: PCFF(fuse=pcff, name=f"{branch}_pcff") for branch in ("sem", "ins")}
        self.jiss = JISS(
            num_classes, embedding_dim, dropout, instance_fusion=instance_fusion, semantic_fusion=semantic_fusion, name="jiss"
        )
        self.bn_decay = BatchNormDecay(0.9)
        for layer in self._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, PointBatchNorm):
                layer.attach_decay(self.bn_decay)
        self.dropout_seed = None

    def use_stateless_dropout(self, seed_variable):
        """Draws dropout masks from `seed_variable` (int64 (2,), set by the training loop each
        step) instead of TensorFlow's global generator: exact resumption after an interruption."""
        self.dropout_seed = seed_variable
        self.jiss.attach_seed(seed_variable)

    def _encoder(self, level, spec):
        name = f"layer{level}"
        if level == 1 or self.backbone == "pointnet2":
            return SetAbstraction(spec["npoint"], spec["radius"], spec["k"], spec["mlp"], name=name)
        return PointConvEncoding(
            spec["npoint"], spec["radius"], spec["sigma_scale"] * self.sigma, spec["k"], spec["mlp"], name=name
        )

    def _decoder(self, branch):
        layers = []
        for level, spec in enumerate(self.decoder_table, start=1):
            name = f"{branch}_fa_layer{level}"
            if level == 4 or self.backbone == "pointnet2":
                layers.append(FeaturePropagation(spec["mlp"], name=name))
            else:
                layers.append(DepthwiseDecoding(spec["mlp"], name=name))
        return layers

    def build(self, input_shape):
        """Creates every weight from the layer table (so `.keras` files load without data)."""
        points = lambda channels: (None, None, channels)  # noqa: E731
        interpolation = (points(3), points(3))
        widths = [self.input_channels - 3]
        for encoder, spec in zip(self.encoders, self.encoder_table):
            encoder.build(points(3), points(widths[-1]))
            widths.append(spec["mlp"][-1])
        decoded = [spec["mlp"][-1] for spec in self.decoder_table]
        for branch, decoder in self.decoders.items():
            coarse = widths[4]
            for level, (layer, spec) in enumerate(zip(decoder, self.decoder_table)):
                skip = points(widths[3 - level])
                if isinstance(layer, DepthwiseDecoding):
                    layer.build(points(3), points(coarse), skip, interpolation, points(spec["k"]))
                else:
                    layer.build(points(coarse), skip, interpolation)
                coarse = decoded[level]
            self.pcffs[branch].build(points(decoded[3]), points(decoded[2]), points(decoded[1]), interpolation, interpolation)
        self.jiss.build(points(self.pcffs["sem"].units), points(self.pcffs["ins"].units))

    def set_bn_decay(self, value):
        """Sets the moving-average decay of every batch norm (the paper's BN-decay schedule)."""
        self.bn_decay.assign(value)

    def call(self, points, training=False):
        if points.shape.rank != 3 or (points.shape[-1] is not None and points.shape[-1] != self.input_channels):
            raise ValueError(
                f"JSNet expects points of shape (batch, num_points, {self.input_channels}), got {points.shape}"
            )
        xyz, features = points[..., :3], points[..., 3:]
        levels = [(xyz, features)]
        for encoder in self.encoders:
            levels.append(encoder(*levels[-1], training=training))
        (l0_xyz, l0), (l1_xyz, l1), (l2_xyz, l2), (l3_xyz, l3), (l4_xyz, l4) = levels

        up = {  # fine <- coarse interpolation weights, shared by both decoders and PCFF
            (3, 4): interpolation_weights(l3_xyz, l4_xyz),
            (2, 3): interpolation_weights(l2_xyz, l3_xyz),
            (1, 2): interpolation_weights(l1_xyz, l2_xyz),
            (0, 1): interpolation_weights(l0_xyz, l1_xyz),
        }
        if self.pcff_enabled:
            up[(0, 2)] = interpolation_weights(l0_xyz, l2_xyz)
        neighbours = {}
        if self.backbone == "pointconv":
            levels = ((3, l3_xyz, self.decoder_table[0]), (2, l2_xyz, self.decoder_table[1]), (1, l1_xyz, self.decoder_table[2]))
            for level, xyz_level, spec in levels:
                neighbours[level] = ops.knn_point(spec["k"], xyz_level, xyz_level)[1]

        heads = {}
        for branch, (fa1, fa2, fa3, fa4) in self.decoders.items():
            if self.backbone == "pointconv":
                d3 = fa1(l3_xyz, l4, l3, up[(3, 4)], neighbours[3], training=training)
                d2 = fa2(l2_xyz, d3, l2, up[(2, 3)], neighbours[2], training=training)
                d1 = fa3(l1_xyz, d2, l1, up[(1, 2)], neighbours[1], training=training)
            else:
                d3 = fa1(l4, l3, up[(3, 4)], training=training)
                d2 = fa2(d3, l2, up[(2, 3)], training=training)
                d1 = fa3(d2, l1, up[(1, 2)], training=training)
            d0 = fa4(d1, l0, up[(0, 1)], training=training)
            heads[branch] = self.pcffs[branch](d0, d1, d2, up[(0, 1)], up.get((0, 2)), training=training)
        logits, embeddings = self.jiss(heads["sem"], heads["ins"], training=training)
        return {"semantic_logits": logits, "embeddings": embeddings}

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "input_channels": self.input_channels,
            "embedding_dim": self.embedding_dim,
            "encoder": self.encoder_table,
            "decoder": self.decoder_table,
            "sigma": self.sigma,
            "dropout": self.dropout_rate,
            "backbone": self.backbone,
            "pcff": self.pcff_enabled,
            "instance_fusion": self.instance_fusion,
            "semantic_fusion": self.semantic_fusion,
        }


def build_model(cfg):
    """JSNet as an experiment config (jsnet_tf.config) describes it."""
    m = cfg["model"]
    encoder = [{**spec, "npoint": npoint, "radius": radius} for spec, npoint, radius in zip(ENCODER, m["npoints"], m["radii"])]
    return JSNet(
        num_classes=m["num_classes"],
        input_channels=m["input_channels"],
        embedding_dim=m["embedding_dim"],
        encoder=encoder,
        sigma=m["sigma"],
        dropout=m["dropout"],
        backbone=m["backbone"],
        pcff=m["pcff"],
        instance_fusion=m["instance_fusion"],
        semantic_fusion=m["semantic_fusion"],
    )
