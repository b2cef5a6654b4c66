"""Sonia: a local-first AI assistant stack and the release gates that prove it."""

__version__ = "0.1.0"

SERVICES: tuple[str, ...] = ("eva", "memory", "router", "openclaw", "voice", "gateway")
"""Every service, in start order: each one's dependencies come before it."""

__all__ = ["SERVICES", "__version__"]
