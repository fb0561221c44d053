"""The model as saved and scored: its files, kinds and identity, loading, devices, calibration, registry."""
