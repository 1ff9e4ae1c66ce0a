"""What the Textual app does apart from its widgets: engine calls in thread workers and their
answers as messages (engine), what it keeps of the engine (watch), the keys that submit jobs
(jobs), CSV export (export), sort / filter dialogs (table_actions), the command palette's
entries (palette), and the messages and query they share."""
