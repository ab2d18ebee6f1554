"""Encoding and search: the bi-encoder, fast label encoding, the label index, BM25 over label texts, and the
hybrid (dense + lexical) ranking that evaluation, the loop and ``lmtx tag`` share."""
