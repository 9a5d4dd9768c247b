"""Lip-sync engines behind one interface (see ``base.LipSyncEngine``)."""
