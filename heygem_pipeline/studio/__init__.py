"""The studio: a web page for people who do not code (``heygem studio``). A thin client of the factory: it puts
uploads into the bucket and submits requests through the GraphQL API; Dagster queues, runs and records the work."""
