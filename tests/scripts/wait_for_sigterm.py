"""A rank that exits like a preempted run: it waits for SIGTERM and exits with 143 (128 + SIGTERM, as
`alignment.preemption.PREEMPTED_EXIT_CODE`); with `--crash` it fails at once with 1 instead.

Started by `accelerate launch` in tests/test_multinode.py to see what the launcher reports when its ranks were
preempted, without paying for a training run (nor for importing torch: the test compares with the constant).
"""

import os
import signal
import sys
import time

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signal.SIGTERM))
    if sys.argv[1:] == ["--crash"]:
        sys.exit(1)
    # One write: print() writes the text and the newline apart, and the other rank's line can land in between.
    sys.stdout.write(f"rank {os.environ['RANK']} waiting for SIGTERM\n")
    sys.stdout.flush()
    time.sleep(600)
