"""One module per CLI command group; workbench.cli registers them."""
