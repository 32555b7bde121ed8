"""Stage 5, rendering: the terminal table, report.json/report.md and PNG plots.

Leaves: nothing in the library below imports them; the plugin and the command-line tools do.
"""
