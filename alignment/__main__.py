"""`python -m alignment <step> ...`, the same as the `alignment` command (see `alignment.commands.console`)."""

import sys

from alignment.commands.console import main

sys.exit(main())
