"""Choosing the winner: confirmation of the top trials against the reference, the winner rule, ensembles of
confirmed configurations, and the refit of the winner."""
