"""The data layer: manifest (index), tf.data pipeline, normalization, simulators.

Import the submodules directly (``fitsae.data.pipeline``); this package does not import
TensorFlow on its own so that ``fitsae index`` and ``fitsae simulate`` start fast.
"""
