"""Evaluation: the paper's methods, scored on labelled queries without leakage, and tuning the PCA, t and α
(layer 2).

Modules, from the bottom up (none imports one listed after it):

* :mod:`~hierqdrant.evaluation.metrics` — map@k, map@r, p@1, mahp@k, hdist@k, severity per query;
* :mod:`~hierqdrant.evaluation.significance` — the paired bootstrap / sign-flip test;
* :mod:`~hierqdrant.evaluation.perturb` — blur, saturation and occlusion of query images;
* :mod:`~hierqdrant.evaluation.plots` — the class tree and map@k figures;
* :mod:`~hierqdrant.evaluation.hooks` — :class:`Hooks`: how a long run reports progress (the CLI: stderr);
* :mod:`~hierqdrant.evaluation.items` — :class:`Items`: what is ranked (vectors, labels, ids, leaves, raw
  features);
* :mod:`~hierqdrant.evaluation.methods` — the methods (cosine-raw, euclidean-raw, euclidean … given) and
  building them on a model;
* :mod:`~hierqdrant.evaluation.scoring` — metric names, the scoring hierarchy, per-query scores,
  :class:`EvalResult`, the paired comparison;
* :mod:`~hierqdrant.evaluation.ranking` — NumPy brute force: :func:`rank`, :func:`evaluate_arrays`;
* :mod:`~hierqdrant.evaluation.collection` — the same through a Qdrant engine: :func:`evaluate_collection`,
  and reading a collection's points;
* :mod:`~hierqdrant.evaluation.tune_grid` — one PCA space of the tuning grid, scored in one pass; grid edges;
* :mod:`~hierqdrant.evaluation.tuning` — :func:`tune` (PCA, t and α on a validation split),
  :func:`tune_methods`, :func:`prepare_methods`;
* :mod:`~hierqdrant.evaluation.sources` — features files and image folders as evaluation items;
* :mod:`~hierqdrant.evaluation.plan` — :class:`EvalPlan`, its checks, fitting the methods on training items;
* :mod:`~hierqdrant.evaluation.protocols` — which protocol applies, cross-fitting folds, joining fold results;
* :mod:`~hierqdrant.evaluation.run_files` / :mod:`~hierqdrant.evaluation.run_collection` — an evaluation on
  a features file or image folder (NumPy), or through a collection (the engine);
* :mod:`~hierqdrant.evaluation.run` / :mod:`~hierqdrant.evaluation.run_tune` — ``hierqdrant eval`` and
  ``hierqdrant tune`` from start to end (:func:`run_eval`, :func:`run_tune`).
"""
