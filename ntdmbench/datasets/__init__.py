"""Dataset records, adapters for the real formats, the synthetic generator and the catalog."""
