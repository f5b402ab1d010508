"""The embedded local store: one SQLite file holding spans and log documents, safe across
``fork()``.
"""
