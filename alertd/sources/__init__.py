"""Sources: where items come from (the Parliament API, RSS/Atom feeds) and how they are stored."""
