"""The ``mynet`` task (lab part 2): MyNet, a CNN trained on 9 % of FashionMNIST.

The task is defined and registered in :mod:`objectives.mynet.objective`, which ``get_task`` imports on
first use; importing this package alone pulls in nothing heavy."""
