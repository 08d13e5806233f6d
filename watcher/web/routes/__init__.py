"""One router per resource; the API's routers carry the `authorize` dependency, declared once."""
