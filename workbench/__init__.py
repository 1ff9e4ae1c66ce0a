"""dit-workbench UI side: the typer CLI and (later) the Textual application."""
