"""The router service: model providers, routing profiles, fallbacks, quarantine and probe-back."""
