"""Mail: the outbox state machine, the sender loop, transports and the sending identity."""
