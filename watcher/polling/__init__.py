"""The poll engine: which registries are due, claiming one, listing it through a provider, comparing each
repository with its snapshot and committing the changes and their events together."""
