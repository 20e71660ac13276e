"""Processing provider `mrhash`: train a model, build an index, query at a point."""
