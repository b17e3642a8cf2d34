"""Comparing a study with a prior one of the same patient: typed change decisions from two evidence ledgers."""
