"""Code shared by the event and job applications: configuration, clients, mappers and processors."""

__version__ = "0.1.0"
