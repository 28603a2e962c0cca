"""Analytical cost model, written over a batch of layouts (leading dimension L).

Shape suffix legend used throughout this package:
    _L   one value per layout of the batch
"""
