"""Publish one YAML catalogue of announcements as feeds and a monthly email digest."""

__version__ = "0.1.0"
