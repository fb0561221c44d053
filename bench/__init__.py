"""Long measurements whose numbers land in docs/ (results.md, scoring.md, training.md): quality/ (the
accuracy protocol and the outlet studies), speed/ (throughput, memory), gpu/ (what runs on a GPU machine).
Each script runs as a module from the repository root, e.g. `python -m bench.speed.score_bench --help`."""
