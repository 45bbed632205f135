"""`python -m alignment.warm --checkpoints A B [C ...] --output_dir DIR`, the same as `alignment-warm`
(see `alignment.commands.console`)."""

if __name__ == "__main__":
    import sys

    from alignment.commands.console import run_step

    sys.exit(run_step("warm"))
