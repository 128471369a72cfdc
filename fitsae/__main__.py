import sys

from fitsae.cli import main

sys.exit(main())
