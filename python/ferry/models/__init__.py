"""Models that ship with Ferry: the demo's digit classifier and the benchmark's echo."""
