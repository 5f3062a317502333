"""ISE's facts (the method: ``maskcl/training/methods/ise.py``).

Zhang et al., "Implicit Sample Extension for Unsupervised Person Re-Identification", CVPR 2022; official
code zhangxinyu-xyz/ISE-ReID (HEAD 3e55527), a fork of ClusterContrast. Its recipe is the Market-1501
script ``ISE_train_market1501.sh`` with the argparse defaults of ``examples/ise_train_usl.py``: 256 = 16 × 16,
DBSCAN eps 0.4, 70 epochs with the rate dropping every 30 (400 iterations, momentum 0.2, average pooling and
temperature 0.05 are the schema's defaults already).

Its switches are the official behaviours that move the numbers, reproduced by default, each with its fix:
the supports take part in the cluster-memory update (``cm.py`` backward), the label-preserving loss's
chunked negatives (``lp_loss.py`` 33-43), and the supports in the memory loss (the paper's PLI ablation,
which the released script cannot turn off).
"""

from __future__ import annotations

from .facts import MethodFacts, Switch

__all__ = ["ISE"]

ISE = MethodFacts(
    name="ise",
    display_name="ISE (re-impl.)",
    short_name="ISE",
    citation="Zhang et al., CVPR 2022 (Implicit Sample Extension); official code zhangxinyu-xyz/ISE-ReID",
    group="unsupervised",
    uses_masks=False,
    trains=True,
    switches=(
        Switch("ise_use_support", "Supports in loss", True),        # supports join the memory loss (PLI)
        Switch("ise_supports_update", "Supports update", True),     # supports also move the centroids (cm.py)
        Switch("ise_lp_negatives", "LP negatives", "official"),     # chunks of topk*K, or the hardest per label
    ),
    recipe={"batch_size": 256, "num_instances": 16, "eps": 0.4, "epochs": 70, "step_size": 30},
    # read only by ISE's step and memory update: the interpolation degree, supports per sample, the
    # label-preserving loss's weight and temperature, the memory update rule (hard: Market, ori: MSMT17)
    own_keys=("ise_lambda_base", "ise_topk", "ise_lp_weight", "ise_lp_temp", "ise_memory_update"),
)
