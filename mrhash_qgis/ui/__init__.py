"""Plugin widgets: dock (engine state, query results), index dialog, training wizard."""
