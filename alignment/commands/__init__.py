"""The entry points: console scripts (`alignment`, `alignment-<step>`), the recipe runner, the
reward / generate / iterate / DoReMi drivers and what they share (recipe parsing, run set-up, packaged recipes,
version checks). `python -m alignment.<step>` runs them through the shims beside the package root."""
