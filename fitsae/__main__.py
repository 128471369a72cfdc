"""``python -m fitsae``: the same console script as ``fitsae`` (:func:`fitsae.cli.main`).

For launchers that run a module rather than a script, e.g. ``mpirun -np 4 python -m fitsae
train ...``; the exit code is the verb's.
"""

import sys

from fitsae.cli import main

sys.exit(main())
