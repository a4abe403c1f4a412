"""What the product does with its rows: rules over the database, free of the web framework."""
