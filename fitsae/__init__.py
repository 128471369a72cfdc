"""fitsae: tunable-rate autoencoders that compress astronomical FITS images at cluster scale.

Layers, lowest first, each importing only those below it: ``io`` (FITS), ``data`` (manifest,
pipeline, normalization, simulation), ``entropy``, ``models``, ``distributed``, ``train``,
``codec``, ``evaluate``, ``cli``. Import the submodules directly.

Importing the package is cheap on purpose (no TensorFlow), so ``fitsae --help`` is instant.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fitsae")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
