"""The ``numpy-mlp`` task (lab part 1): a NumPy MLP telling two MNIST digits apart.

The task is defined and registered in :mod:`objectives.numpy_mlp.objective`, which ``get_task`` imports on
first use; importing this package alone pulls in nothing heavy."""
