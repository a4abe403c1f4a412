"""alignloop's web tier and the domain rules over the database; see ARCHITECTURE.md."""
