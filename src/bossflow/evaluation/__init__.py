"""Evaluation: metrics against references, feature classifiers, benchmarks, figures and the demo.

* :mod:`~bossflow.evaluation.evaluate`: schedules scored on fresh noises (RMSE, W2, MMD², FD, FID);
* :mod:`~bossflow.evaluation.classifier`: the digits and Fashion-MNIST feature classifiers;
* :mod:`~bossflow.evaluation.bench`: every search on every model, side by side;
* :mod:`~bossflow.evaluation.figures`: the PNG figures;
* :mod:`~bossflow.evaluation.demo`: ``bossflow demo``'s report.
"""
