"""The ``kvcache`` command line: thin typer commands over the library."""
