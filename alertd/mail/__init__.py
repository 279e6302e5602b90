"""Mail: the message builder, the outbox state machine, the sender, transports, identity."""
