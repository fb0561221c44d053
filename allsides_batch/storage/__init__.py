"""Where data lives: Parquet and JSON over any fsspec URL, the output layout, the corpus manifest, leases."""
