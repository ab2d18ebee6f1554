"""Evaluation: ranking metrics, ``lmtx evaluate``, the teacher's quality on gold, the prompt lab and run reports."""
