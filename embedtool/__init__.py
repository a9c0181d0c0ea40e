"""embedtool: learn, index and query audio embeddings from your own audio, without labels."""

__version__ = "0.1.0"
