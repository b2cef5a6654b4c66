"""What every service shares: app factory, auth, errors, correlation, logging, health,
metrics, the internal client and SQLite helpers. Services import from the submodules."""
