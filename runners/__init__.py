"""runners package (see DESIGN §2)."""
