"""gateway package (see DESIGN §2)."""
