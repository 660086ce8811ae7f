"""How sweep workers start: local processes (sweep.runner) and SLURM job arrays (launch.slurm)."""
