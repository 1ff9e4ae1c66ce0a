"""The Textual workbench's widgets and screens, one per module; workbench/app.py composes them,
workbench/services/ holds what the app does apart from them."""
