"""What every gate family uses: evidence and verdicts, provenance of the code that ran,
progress bars, and the process checks (zombies, orphans, WAL files left)."""
