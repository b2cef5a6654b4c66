"""OpenClaw, tool execution: the tool registry, the path sandbox, the OS sandbox."""
