"""projections package (see DESIGN §2)."""
