"""What runs on a GPU machine with no network: the pack made here (pack.py), the transformer folds run
there (transformer.py, started by protocol.sh)."""
