"""Documentation generators (``python -m docs.gen_cli_reference`` and friends); the pages are Markdown."""
