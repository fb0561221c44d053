"""Prefect flows: thin front doors onto the library (see flows/score_corpus.py, flows/train_model.py).

Importing this package imports nothing from Prefect; each flow module does, when it is loaded."""
