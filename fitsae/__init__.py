"""fitsae: tunable-rate autoencoders that compress astronomical FITS images at cluster scale.

Importing the package is cheap on purpose (no TensorFlow), so ``fitsae --help`` is instant.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fitsae")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
