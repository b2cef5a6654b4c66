"""The release gates: one module per gate, plus the shared load generator, verdict
statistics, evidence writing and the report."""
