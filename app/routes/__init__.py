"""HTTP routers, one module per URL prefix; `app.main` includes them all."""
