"""Exact and near-duplicate (MinHash LSH) removal with an incremental index (issue 5)."""
