"""Training registry detectors: datasets, augmentation, SSD losses, COCO evaluation, the loop.

Importing this package does not import torch; the modules that need it import it lazily.
"""

from __future__ import annotations
