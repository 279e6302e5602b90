"""Subscribers and their alerts: what can be done to them (lifecycle)."""
