"""synthboost: how much do synthetic images help a classifier with little or lopsided real data?"""

__version__ = "0.1.0"
