"""HyperCLIP workbook: zero-shot weight generation from task descriptions (Nava et al.)."""
__version__ = "0.1.0"
