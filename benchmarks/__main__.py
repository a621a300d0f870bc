"""``python -m benchmarks``: see :mod:`benchmarks.suite`."""

from benchmarks.suite import main

main()
