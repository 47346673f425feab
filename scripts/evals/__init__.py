"""The protocol shared by the evaluations (``scripts/rd_eval.py``, ``scripts/temporal_eval.py``,
``scripts/generality_eval.py``) and the report helpers of the benchmarks.

* :mod:`scripts.evals.sources`: where features come from: Fashion-MNIST files, decoded clips, the natural
  images of ``data/images``, frame augmentations, a backbone run over frames with an on-disk cache.
* :mod:`scripts.evals.splits`: leave-one-video-out folds, time / phase / video splits of clips into
  sequences, every sampling phase at a lower frame rate.
* :mod:`scripts.evals.representations`: the baselines (``featcomp.train`` baselines, FAISS PQ / OPQ) and
  learned heads behind one ``code(x) -> (bits as stored, decoded)`` interface, and the rate-control ladder.
* :mod:`scripts.evals.metrics`: bits as stored, top-1 / top-5 agreement and KL with a teacher, kNN
  recall@k, linear-probe accuracy, the worst held-out video, bits at equal quality between two curves.
* :mod:`scripts.evals.report`: machine + date line, markdown tables, marked sections of docs/*.md.
* :mod:`scripts.evals.probe`: the linear-probe epoch the store benchmarks time.

Everything here uses featcomp's public API only (``tests/test_scripts_public_api.py``); the scripts
keep their argument parsing and the steps specific to their experiment.
"""
