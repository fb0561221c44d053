"""Quality: the accuracy protocol (docs/results.md), cross-validated variants and the outlet studies."""
