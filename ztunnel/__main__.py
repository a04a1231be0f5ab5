"""`python -m ztunnel`."""

import sys

from ztunnel.main import main

sys.exit(main())
