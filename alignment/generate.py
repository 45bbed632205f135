"""`python -m alignment.generate [--config RECIPE ...]`, the same as `alignment-generate`
(see `alignment.commands.console`)."""

if __name__ == "__main__":
    import sys

    from alignment.commands.console import run_step

    sys.exit(run_step("generate"))
