"""Processing algorithms of the `mrhash` provider."""
