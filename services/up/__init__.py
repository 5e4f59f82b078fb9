"""`mcpgw up`: the whole gateway as one process tree on one machine."""
