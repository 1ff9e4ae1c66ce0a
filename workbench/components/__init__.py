"""Components of the Textual workbench, one module each; see workbench/app.py for the layout."""
