"""HTML routers: the rater's pages, the account, links, the playground and the admin console."""
