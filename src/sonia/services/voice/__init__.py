"""The voice service: realtime sessions, the turn state machine and speech adapters."""
