"""Pure drawing for the Textual app: values to terminal cells, colours, images and plots."""
