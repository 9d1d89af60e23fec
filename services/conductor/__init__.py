"""The conductor: gives the next turn in chats with bots, as the floor's policy says (schemas/floor.py)."""

from services.conductor.service import Conductor, ConductorStatus, run_conductor

__all__ = ["Conductor", "ConductorStatus", "run_conductor"]
