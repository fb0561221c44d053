"""Speed: scoring and training throughput against the Hugging Face baselines, and the scorer's memory."""
