"""The web application: FastAPI wiring, request plumbing and the routers."""
