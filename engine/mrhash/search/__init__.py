"""Index to hits: queries by point, footprint or tile (one index or shards), relevance feedback
from marks, and maps of every place like the marked ones."""
