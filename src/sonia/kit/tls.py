"""TLS between services: what a service serves, and what its callers trust.

With `[tls] cert_file` and `key_file` every service of the home serves HTTPS
with that certificate (TLS 1.2 or newer); that is what allows a listen address
beyond loopback (config.py). Callers (the services' internal clients, the
gateway's WebSocket to the voice service, the supervisor's readiness checks,
the CLI) verify the certificate and the host name against `[tls] ca_file`
alone when it is set, so a private CA is trusted exactly where it was named and
nowhere else; without it they use the system's store. Nothing ever turns
verification off: a certificate that does not check out is a refused connection.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from sonia.config import Settings
from sonia.errors import ConfigError
from sonia.home import Home

__all__ = ["client_context", "server_options"]


def client_context(home: Home, settings: Settings) -> ssl.SSLContext:
    """The context every caller from this home verifies https:// services with."""
    ca = settings.tls.ca_file
    try:
        return ssl.create_default_context(cafile=str(home.resolve(ca)) if ca else None)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(f"cannot load the CA bundle {ca}: {exc}", key="tls.ca_file") from exc


def server_options(home: Home, settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS options for this home's services; empty when TLS is off."""
    tls = settings.tls
    if tls.cert_file is None or tls.key_file is None:
        return {}
    cert, key = str(home.resolve(tls.cert_file)), str(home.resolve(tls.key_file))

    def context(config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        # Python's server defaults (TLS 1.2+, its cipher list), not uvicorn's, whose
        # cipher string "TLSv1" leaves TLS 1.2 without its AEAD ciphers.
        made = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        made.minimum_version = ssl.TLSVersion.TLSv1_2
        made.load_cert_chain(cert, key, password=lambda: b"")
        made.set_alpn_protocols(["http/1.1"])
        return made

    return {"ssl_certfile": cert, "ssl_keyfile": key, "ssl_context_factory": context}
