"""JSON routers under /api, one module per URL prefix."""
