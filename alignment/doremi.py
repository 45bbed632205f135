"""`python -m alignment.doremi [--config RECIPE ...]`, the same as `alignment-doremi`
(see `alignment.commands.doremi`)."""

if __name__ == "__main__":
    import sys

    from alignment.commands.console import run_step

    sys.exit(run_step("doremi"))
