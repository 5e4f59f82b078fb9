"""`make drills`: the gateway as users run it, failed on purpose under load, one drill at a time.

Each drill has its own module; `python -m bench.drills` runs them and writes the table.
"""
