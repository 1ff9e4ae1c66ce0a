"""What the Textual app does apart from its widgets: engine calls in workers, what it keeps of
the engine, CSV export, the command palette's entries and the messages between them."""
