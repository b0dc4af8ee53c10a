"""Torch models (``MyNet``, ``FinetuneNet``): they arrive with the ``mynet`` and ``finetune`` tasks."""

__all__: list[str] = []
