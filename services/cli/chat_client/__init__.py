"""`chatbus chat`: the terminal client. It talks to the REST API with an API key, never to NATS.

`api.py` holds the HTTP calls and the live feed (WebSocket, resumed by sequence); `view.py` folds the
feed into the chat's state (schemas/chat_state.py, the same fold the services use) and says what to
print; `commands.py` reads what the user types (`completion.py` completes it); `session.py` runs the
prompt; `command.py` is the typer command that picks, creates and opens a chat.
"""
