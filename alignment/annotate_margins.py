"""`python -m alignment.annotate_margins [options]`, the same as `alignment-annotate-margins` (`alignment.console`)."""

if __name__ == "__main__":
    import sys

    from alignment.console import run_step

    sys.exit(run_step("annotate-margins"))
