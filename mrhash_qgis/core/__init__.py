"""Plugin core: engine client, settings, and the layers built from engine results."""
