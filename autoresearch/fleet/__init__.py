"""Fleets: where experiments run. Local slots here; Slurm partitions in fleet.slurm."""
