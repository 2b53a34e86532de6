"""Speed-up benchmarks: GuideLLM results of a baseline and a speculator, compared and reported."""
