"""alignloop web tier: configuration, data layer, authentication and HTTP routes."""
