"""Catalogue in, feeds and pages out."""
