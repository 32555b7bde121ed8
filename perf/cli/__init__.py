"""The command-line tools: ``genperf calibrate | history | ab`` (also ``python -m perf.X``).

The only place outside pytest that prints.
"""
