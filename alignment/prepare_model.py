"""`python -m alignment.prepare_model [options]`, the same as `alignment-prepare-model` (see
`alignment.modeling.prepare_model`)."""

if __name__ == "__main__":
    import sys

    from alignment.commands.console import run_step

    sys.exit(run_step("prepare-model"))
