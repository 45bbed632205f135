"""`python -m alignment.generate [--config RECIPE ...]`, the same as `alignment-generate` (see `alignment.console`)."""

if __name__ == "__main__":
    import sys

    from alignment.console import run_step

    sys.exit(run_step("generate"))
