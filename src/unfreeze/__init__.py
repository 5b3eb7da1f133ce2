"""unfreeze: fine-tune an ImageNet-pretrained InceptionV3 on image folders, reproducibly.

Top-level modules: the ``unfreeze`` command (``cli``), shared helpers (``io``, ``runtime``),
the HTML report (``report``) and its building blocks, multi-label tables included
(``report_tables``); the packages name their own modules.
"""

__version__ = "0.2.0"
