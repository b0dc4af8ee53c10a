"""The ``finetune`` task (lab part 3): a pretrained backbone fine-tuned on Dogs-vs-Cats photos.

The task is defined and registered in :mod:`objectives.finetune.objective`, which ``get_task`` imports on
first use; importing this package alone pulls in nothing heavy."""
