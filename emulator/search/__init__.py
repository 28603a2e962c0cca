"""Layout search: every valid parallel layout of a job, evaluated in chunks by the same cost model.

Suffix legend: ``_C`` one entry per candidate of a chunk; ``_L`` one per valid layout of the chunk.
"""
