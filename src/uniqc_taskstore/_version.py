"""The package's version: the one place it is written (hatch reads it for the wheel),
so ``uniqc-tasks --version`` needs no package metadata lookup."""

__version__ = "0.1.0"
