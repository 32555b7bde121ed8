"""Trackers measure one generate call each: timing, memory and output length.

Each is a context manager (or a pure function over what generate returned) that produces a frozen
result dataclass carrying its units in its field names.
"""
