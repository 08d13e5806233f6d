"""The web console: server-rendered pages over the read model, served by the API's app."""
