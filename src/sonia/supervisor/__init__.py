"""Starting, watching and stopping the service processes of one home.

`control` is what the CLI calls (up, down, status); `daemon` is the background
supervisor process that owns the services; `process` is one managed child.
"""
