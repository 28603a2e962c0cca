"""Fleet emulation: every GPU of the cluster, step by step, on NumPy or CuPy.

Shape suffix legend used in this package:
    _G   one entry per GPU
    _N   one entry per TP group (a pipeline stage of one data-parallel replica; N = G / tp)
    _B   one entry per step of a batch (attempts)
    _BN  steps x TP groups
    _T   one entry per GPU type (pool)
"""
