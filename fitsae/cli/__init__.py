"""The ``fitsae`` console script: ``fitsae VERB [options]``.

Each verb lives in its own module ``fitsae.cli.<verb>`` as a thin ``main(argv=None)`` over the
library, imported only when that verb runs so ``fitsae --help`` never loads TensorFlow.
"""

from __future__ import annotations

import importlib
import sys

from fitsae import __version__

VERBS = {
    "simulate": "write simulated FITS fields (toy, GalSim, sky) or digit/MNIST cubes",
    "index": "scan FITS files once and write the manifest training reads",
    "train": "train a tunable autoencoder (alone or under mpirun/srun)",
    "evaluate": "score a run's checkpoints against PCA and fpack on held-out images",
    "compress": "encode FITS images into .fae.fits containers at a budget eta",
    "decompress": "decode .fae.fits containers back to FITS images",
    "doctor": "print the software stack and check Horovod/MPI",
}

USAGE = "usage: fitsae [--version] [--help] VERB [options] [--verbose]\n\nverbs:\n" + "\n".join(
    f"  {verb:<11} {text}" for verb, text in VERBS.items()
) + "\n\nRun `fitsae VERB --help` for a verb's options. --verbose (anywhere on the line) keeps " \
    "TensorFlow's and XLA's own log lines, which are hidden by default."


def main(argv: list[str] | None = None) -> int:
    """Dispatch to ``fitsae.cli.<verb>.main``; returns the process exit code.

    Called with ``argv=None`` (the console script), TensorFlow's log lines are silenced before
    any verb imports it, unless ``--verbose`` is given; called in-process with a list, the
    caller's process is left as it is.
    """
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"fitsae {__version__}")
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"fitsae: unknown verb or option {verb!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    if from_command_line and not verbose:
        from fitsae.cli.quiet import quiet_tensorflow

        quiet_tensorflow()
    try:
        module = importlib.import_module(f"fitsae.cli.{verb}")
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        if not from_command_line:
            raise
        print(f"fitsae {verb}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
