"""Plain re-expressions of the official algorithms, written from the spec, used as the yardstick in
equivalence tests and in ``tools/benchmark.py`` (never in training)."""
