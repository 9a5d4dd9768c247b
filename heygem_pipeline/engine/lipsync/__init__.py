"""Lip-sync engines behind one interface (``base.LipSyncEngine``), created by name (``registry``)."""
