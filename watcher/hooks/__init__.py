"""Reading registries' notifications: which repositories each says to list again, and nothing more.

A notification is a hint, never the truth: it only names repositories, which are then listed and diffed
exactly as a scheduled poll would (`watcher.polling.repository`). So no format looks at tags or digests
beyond "the event is about a manifest": a forged or replayed notification costs a listing, never an event.

Each format lives in its own module and is described by one `HookFormat` (`watcher.hooks.format`): how its
sender authenticates (`Auth`), how its body names repositories, and what to configure on the registry's
side. The receiver (`watcher.web.routes.hooks`) and `watcher registry webhook` look formats up in
`watcher.hooks.formats`; a registry's receiver (secret, URL, set-up) is `watcher.hooks.receivers`.
"""
