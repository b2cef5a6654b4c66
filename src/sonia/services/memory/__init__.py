"""The memory service: the memory ledger and conversation turns in SQLite, searched with FTS5."""
