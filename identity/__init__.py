"""Who may do what: users and API keys, passwords and browser sessions, and erasure of a user or a chat.
Imports schemas, bus and logtools (erasure reads a chat's state from the log)."""
