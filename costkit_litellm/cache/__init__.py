"""Semantic cache: scope keys, verification, backends."""
