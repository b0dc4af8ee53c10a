"""Torch machinery the torch tasks share: the epoch loop, batch augmentation, precision, resuming a trial,
time and memory plans, and the allocator settings a trial trains under."""
