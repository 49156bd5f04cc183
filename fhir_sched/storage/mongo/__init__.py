"""MongoDB adapter of the DocumentStore port (PyMongo's asyncio API; see ``store``)."""

from .store import MongoStore, MongoUnit

__all__ = ["MongoStore", "MongoUnit"]
