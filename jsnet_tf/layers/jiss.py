"""Joint instance and semantic segmentation module (JISS, paper Sec. 3.3, eqs. (5)-(11))."""

import keras
import tensorflow as tf

from jsnet_tf.layers import arithmetic
from jsnet_tf.layers.conv import ConvBlock, dense


def _channel_attention(x):
    """x * sigmoid(mean over channels): one scalar weight per point."""
    return x * tf.sigmoid(tf.reduce_mean(x, axis=-1, keepdims=True))


def _fused_attention(x, y):
    """_channel_attention(concat([x, x + y])) kept unformed as (x, y, the per-point scale): the
    channel mean of the concatenation is (2 sum x + sum y) / 2C. y may broadcast over the points."""
    total = 2.0 * tf.reduce_sum(x, axis=-1, keepdims=True) + tf.reduce_sum(y, axis=-1, keepdims=True)
    return x, y, tf.sigmoid(total / (2.0 * x.shape[-1]))


def _conv(block, features, training):
    """block(features), where features is a tensor or an unformed attention (x, y, s):
    W (s [x, x + y]) + b = s (x (W_a + W_b) + y W_b) + b."""
    if not isinstance(features, tuple):
        return block(features, training=training)
    x, y, scale = features
    kernel, bias = block.affine(training)
    top, bottom = tf.split(kernel, 2, axis=0)
    return block.finish((dense(x, top + bottom) + dense(y, bottom)) * scale + bias, training)


@keras.saving.register_keras_serializable(package="jsnet_tf")
class JISS(keras.layers.Layer):
    """Semantic features F_SS and instance features F_IS (B, N, 128) -> semantic logits (B, N, C)
    and instance embeddings (B, N, E).

    instance fusion:  F_ISSC = concat(F_IS, F_IS + cbr(F_SS));  F_ISSR = F_ISSC * sigmoid(mean_c F_ISSC)
    semantic fusion:  F_ISST = mean over the block's points of cbr(F_ISSR), tiled;
                      F_SSI = concat(F_SS, F_SS + F_ISST);  F_SSIR = F_SSI * sigmoid(mean_c F_SSI)
    outputs:          embeddings = conv(dropout(cbr(F_ISSR))), logits = conv(dropout(cbr(F_SSIR)))
    (cbr: 1x1 conv + BN + ReLU, 128.) Either fusion can be switched off (ablation), passing the
    features through unchanged. The semantic cache averages over all points of a block, so the
    points of a block are coupled in eval mode too.
    """

    def __init__(self, num_classes, embedding_dim=5, dropout=0.5, instance_fusion=True, semantic_fusion=True, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.embedding_dim, self.dropout = num_classes, embedding_dim, dropout
        self.instance_fusion, self.semantic_fusion = instance_fusion, semantic_fusion
        conv = lambda units, name, **kw: ConvBlock(units, layout="conv1d", name=name, **kw)  # noqa: E731
        self.sem_cache = conv(128, "sem_cache_1") if instance_fusion else None
        self.ins_cache = conv(128, "ins_cache_1") if semantic_fusion else None
        self.ins_fc2 = conv(128, "ins_fc2")
        self.ins_fc5 = conv(embedding_dim, "ins_fc5", batch_norm=False, activation=None)
        self.sem_fc2 = conv(128, "sem_fc2")
        self.sem_fc5 = conv(num_classes, "sem_fc5", batch_norm=False, activation=None)

    def build(self, semantic_shape, instance_shape):
        width = lambda shape: (None, None, shape)  # noqa: E731
        instance, semantic = instance_shape[-1], semantic_shape[-1]
        if self.instance_fusion:
            self.sem_cache.build(width(semantic))
            instance = 2 * instance
        if self.semantic_fusion:
            self.ins_cache.build(width(instance))
            semantic = 2 * semantic
        self.ins_fc2.build(width(instance))
        self.ins_fc5.build(width(128))
        self.sem_fc2.build(width(semantic))
        self.sem_fc5.build(width(128))

    def attach_seed(self, seed):
        """Makes dropout stateless, keyed by a shared int64 (2,) variable that the training loop
        sets every step, so a resumed run draws the same masks as an uninterrupted one."""
        self.seed = seed

    def _dropout(self, x, training, stream):
        if not training or self.dropout <= 0:
            return x
        if getattr(self, "seed", None) is None:
            return tf.nn.dropout(x, rate=self.dropout)
        return tf.where(self._keep_mask(x, stream), x / (1.0 - self.dropout), tf.zeros_like(x))

    def _keep_mask(self, x, stream):
        """The stateless mask of the whole global batch, of which a replica takes its own rows: a
        batch split over replicas drops the same values as on one device."""
        seed = self.seed + tf.constant([0, stream], tf.int64)
        replica = tf.distribute.get_replica_context()
        replicas = replica.num_replicas_in_sync if replica is not None else 1
        rows = tf.shape(x)[0]
        uniform = tf.random.stateless_uniform(tf.concat([[rows * replicas], tf.shape(x)[1:]], 0), seed)
        if replicas > 1:
            start = tf.cast(replica.replica_id_in_sync_group, tf.int32) * rows
            uniform = uniform[start : start + rows]
        return uniform >= self.dropout

    def call(self, semantic, instance, training=False):
        if arithmetic.fast():
            return self._call_fast(semantic, instance, training)
        if self.instance_fusion:
            fused = instance + self.sem_cache(semantic, training=training)
            instance = _channel_attention(tf.concat([instance, fused], axis=-1))
        if self.semantic_fusion:
            cache = tf.reduce_mean(self.ins_cache(instance, training=training), axis=1, keepdims=True)
            semantic = _channel_attention(tf.concat([semantic, semantic + cache], axis=-1))
        embeddings = self.ins_fc5(self._dropout(self.ins_fc2(instance, training=training), training, 1), training=training)
        logits = self.sem_fc5(self._dropout(self.sem_fc2(semantic, training=training), training, 2), training=training)
        return logits, embeddings

    def _call_fast(self, semantic, instance, training):
        """`call` without the (B, N, 256) concatenations and attention products (split weights)."""
        if self.instance_fusion:
            instance = _fused_attention(instance, self.sem_cache(semantic, training=training))
        if self.semantic_fusion:
            cache = tf.reduce_mean(_conv(self.ins_cache, instance, training), axis=1, keepdims=True)
            semantic = _fused_attention(semantic, cache)
        embeddings = _conv(self.ins_fc2, instance, training)
        logits = _conv(self.sem_fc2, semantic, training)
        embeddings = self.ins_fc5(self._dropout(embeddings, training, 1), training=training)
        logits = self.sem_fc5(self._dropout(logits, training, 2), training=training)
        return logits, embeddings

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "embedding_dim": self.embedding_dim,
            "dropout": self.dropout,
            "instance_fusion": self.instance_fusion,
            "semantic_fusion": self.semantic_fusion,
        }
