"""`python -m alignment.annotate_margins [options]`, the same as `alignment-annotate-margins`
(`alignment.commands.console`)."""

if __name__ == "__main__":
    import sys

    from alignment.commands.console import run_step

    sys.exit(run_step("annotate-margins"))
