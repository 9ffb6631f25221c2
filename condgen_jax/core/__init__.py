"""What every floor stands on: config-key declarations, workdir
files and orbax checkpoints, the device mesh, process settings, the host.
"""
