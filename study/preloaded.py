"""The last module `--jobs N`'s forkserver imports: it freezes the heap the server has preloaded.

Python's advice before fork(): frozen objects are never visited by a forked worker's collections, so
their pages stay shared instead of being copied, and the server's own exit skips them (it spent about
1 s walking torch, scikit-learn and Optuna, which a pipe such as `study run --jobs 2 | tee log` waits for).
"""
import gc

gc.freeze()
