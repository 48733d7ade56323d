"""Where dataset versions and model versions are kept and found again.

For now a file store under ``NICHE_HOME`` (``datasets/<fingerprint>``, ``models/<id>``); the
SQLAlchemy registry with aliases and gates builds on the same artifacts.

    >>> store = LocalStore(Settings())
    >>> record = store.save_model(trained)
"""

from niche.registry.files import LocalStore, ModelRecord

__all__ = ["LocalStore", "ModelRecord"]
