"""Stage 1, what to run: settings, run configs, workloads, prompts and the option table."""
