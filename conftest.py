"""This repository's own pytest settings. The genperf plugin itself is registered once, through
the ``pytest11`` entry point in pyproject.toml, and is not imported here.

Offline mode is not forced here: a user who names a hub model (``--perf-model org/name``) must be
able to download it. The Makefile runs ``make test`` and ``make bench`` with ``HF_HUB_OFFLINE=1``,
because the embedded and tiny models never need the network.
"""

# Data folders hold no tests; never let a stray *_test.py or conftest in them be collected.
collect_ignore = ["fixtures", "baselines", "docs", "reports"]

# Hypothesis: the genperf plugin registers the ci / dev / nightly profiles (perf/scenarios/strategies.py);
# this suite runs ci unless --hypothesis-profile says otherwise (Hypothesis applies that option
# after this file is imported).
from hypothesis import settings  # noqa: E402

from perf.scenarios.strategies import register_profiles  # noqa: E402

register_profiles()
settings.load_profile("ci")
