"""The default path of ``rpztune run``: search, confirm, refit and ensemble inside one budget."""
