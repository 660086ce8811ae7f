"""Local sweeps: the same YAML a W&B server would run, driven by W&B's own sweep engine (`sweeps`)
and one SQLite store, with several worker processes. See runner.run_sweep."""
