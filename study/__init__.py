"""study: Optuna studies whose trials are real PyTorch training runs.

    python -m study run quick          # search, prune, store, summarise
    python -m study spaces             # the shipped questions
"""
__version__ = "0.1.0"
