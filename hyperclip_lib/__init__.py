"""HyperCLIP workbook: zero-shot weight generation from task descriptions (Nava et al.)."""
from .numerics import pin_cpu_paths

pin_cpu_paths()   # before any torch kernel runs: the reproducibility contract (numerics.py)
__version__ = "0.1.0"
