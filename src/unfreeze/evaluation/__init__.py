"""Evaluation: numbers about a trained model, on images it never trained on.

Pure metrics (``metrics``) and their bootstrap intervals (``bootstrap``), two models compared
on the same images (``compare``), the warnings shown before any number (``caveats``),
predictions in row order with test-time augmentation (``inference``), the operating point and
calibration fitted on validation (``calibrate``), the test report (``evaluate``), Grad-CAM
(``gradcam``), one cross-validation fold (``cv``) and the CV report (``cv_report``), PNG
figures (``plots``); metrics, operating point, intervals and tables of multi-label tasks,
label by label (``multilabel``). Imports training, dataset, io and config.
"""
