"""Tools over the event log itself, with no read model: a chat's state read from the log and decisions
appended to it, exports of training data and chats, imports. Imports schemas and bus only."""
