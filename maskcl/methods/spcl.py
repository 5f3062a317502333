"""SpCL's facts (the method: ``maskcl/training/methods/spcl.py``).

Ge et al., "Self-paced Contrastive Learning with Hybrid Memory for Domain Adaptive Object Re-ID",
NeurIPS 2020 (arXiv 2006.02713); official code yxgeee/SpCL (``examples/spcl_train_usl.py``, the purely
unsupervised setting). Its model, batch and memory recipe are MaskCL's (64 = 16 x 4, momentum 0.2,
temperature 0.05, average pooling, eps 0.6 with gap 0.02); only its schedule differs: 50 epochs of 400
iterations with the rate dropped every 20 (at 0.4 and 0.8 of the schedule).

No component switches: every official behaviour that moves the numbers (the compactness test against the
cluster's best member, the independence threshold fixed once at epoch 0, a cluster's independence being
its best member's) is the method's design, reproduced as it is (docs/methods.md).
"""

from __future__ import annotations

from .facts import MethodFacts

__all__ = ["SPCL"]

SPCL = MethodFacts(
    name="spcl",
    display_name="SpCL (re-impl.)",
    short_name="SpCL",
    citation="Ge et al., NeurIPS 2020 (arXiv 2006.02713); official code yxgeee/SpCL",
    group="unsupervised",
    uses_masks=False,
    trains=True,
    recipe={"epochs": 50},  # spcl_train_usl.py line 303; every other train value equals MaskCL's default
    # the hybrid memory's softmax epsilon (hm.py 57-60, 74) and the tight / loose DBSCAN scales eps -/+ eps_gap
    own_keys=("softmax_eps", "eps_gap"),
)
