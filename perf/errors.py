"""Exception types of genperf, one per kind of failure, so callers can tell them apart.

Every message names the file, option or key involved, the value seen and what is accepted.
"""


class GenperfError(Exception):
    """Base class of every error genperf raises on purpose."""


class ConfigError(GenperfError):
    """A setting in ``[tool.genperf]`` or a ``--perf-*`` option is malformed or unknown."""


class ModelLoadError(GenperfError):
    """A model could not be located or loaded (missing package, folder, or weights format)."""


class PerformanceRegression(GenperfError):
    """A measurement broke a limit: an in-run expectation against the reference config."""


class ParityError(GenperfError):
    """A config's outputs differ from the reference config's beyond its parity thresholds."""


class BaselineError(GenperfError):
    """A stored baseline file is unreadable, of another schema, or of other hardware."""
