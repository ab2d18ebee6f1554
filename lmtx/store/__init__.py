"""Storage: input files (documents, labels), run folders, offline weights, fault-injection points.

The bottom of the package: it imports only ``lmtx.config``.
"""
