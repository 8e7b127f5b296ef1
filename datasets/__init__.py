"""Data sets: one module per source (fetching, caching, splits). Installed as discdiff.datasets."""
