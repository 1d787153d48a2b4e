"""jsnet-tf: JSNet (joint instance and semantic segmentation of 3D point clouds) for TensorFlow 2
and Keras 3. `jsnet_tf.ops` holds the point ops the network is built on."""

__version__ = "0.1.0"
