"""Digests: when they are due, what they show, and how they are rendered."""
