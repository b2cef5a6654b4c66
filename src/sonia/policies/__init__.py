"""Default policy files copied into a new home (tool tiers, command allowlist)."""
