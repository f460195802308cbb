"""autoresearch: an LLM agent runs ML research campaigns across a GPU fleet."""
