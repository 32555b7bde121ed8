"""This repository's own pytest settings. The genperf plugin itself is registered once, through
the ``pytest11`` entry point in pyproject.toml, and is not imported here."""

import os

# Nothing in this repository's tests may reach the Hugging Face hub: the embedded and tiny models
# load offline, and a test that tried to download would hang or flake on a closed CI network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
