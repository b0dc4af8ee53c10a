"""The study engine: storages, samplers and pruners, worker processes, heartbeats and recovery, interrupts,
live progress and the checkpoints a study keeps."""
