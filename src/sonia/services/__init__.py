"""The six services; each package holds app.py (its routes) beside its domain modules."""
