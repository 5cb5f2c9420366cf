"""The log: envelope, catalog, subjects, codec and the JetStream store."""
