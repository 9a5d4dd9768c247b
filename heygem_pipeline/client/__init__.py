"""Programs that submit work to the Dagster instance and follow it (`heygem run`)."""
