"""Traffic capture: an OpenAI-compatible proxy in front of vLLM that keeps sampled chat prompts as JSONL.

Standard library only (asyncio streams), so it runs in the runtime image next to vLLM without torch.
"""
