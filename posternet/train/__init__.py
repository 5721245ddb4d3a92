"""Training: the config tree, the run, checkpoints and hardware choices.

`python -m posternet.train --flagfile=configs/….cfg` (posternet/train/__main__.py).
"""
