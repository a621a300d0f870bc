"""The benchmark suite: ``python -m benchmarks --db sqlite --size 1000000``.

Prints ours next to a raw-driver floor (same file or database, same schema, same
durability, hand-written SQL) with the ratio, the scaling table (each read at a small
and a large store), memory and copy figures, and writes the same as JSON. Timings are
never asserted anywhere; ``tests/test_benchmarks_smoke.py`` only runs it tiny.
"""
