"""Subscribers and their alerts: what can be done to them (lifecycle) and the words every
interface uses for them (vocabulary)."""

# Nothing is imported here: `alertd list` reads vocabulary without the database stack.
