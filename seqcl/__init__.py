"""seqcl — contrastive learning for sequential recommendation, as plugins."""

__version__ = "0.1.0"
