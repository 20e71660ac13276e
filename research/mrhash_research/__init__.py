"""Research beside the engine, not shipped with the plugin: retrieval scores of MrHash against
baselines (`evaluate`, `baselines`), the benchmarks behind docs/BENCHMARKS.md, and their
`mrhash eval` / `mrhash bench` commands (the engine's CLI registers them when this package is
installed)."""
