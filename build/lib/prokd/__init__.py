"""prokd: knowledge distillation for fast CPU prostate segmentation in T2-weighted MRI.

Re-implements and extends Ben Loussaief et al., "Knowledge Distillation for Adaptive
MRI Prostate Segmentation Based on Limit-Trained Multi-Teacher Models" (arXiv 2303.09494).
"""

__version__ = "0.1.0"
