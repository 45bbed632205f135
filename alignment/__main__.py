"""`python -m alignment <step> ...`, the same as the `alignment` command (see `alignment.console`)."""

import sys

from alignment.console import main

sys.exit(main())
