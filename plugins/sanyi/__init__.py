"""Sanyi (三医): the data exchange through which health, insurance and drug traceability supervise together."""

__version__ = "0.1.0"
