"""streamobs: measure OpenAI-compatible token streams as their users feel them."""

__version__ = "0.1.0"
