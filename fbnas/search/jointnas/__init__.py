"""FBNetV3's JointNAS: architecture + training-recipe search (ALGORITHMS.md section 3).

* ``space.py`` — :class:`JointSpace`, the joint space as data (implements the engine's
  ``Space``), with population-speed decoding and predictor features;
* ``cost.py`` — MACs, params and latency of whole populations (vectorised, cached per
  unique block) and the constraints;
* ``predictor.py`` — the accuracy predictor (encoder, proxy head, accuracy head);
* ``coarse.py`` — stage 1: early-stopping calibration, Sobol rounds;
* ``fine.py`` — stage 2: the adaptive genetic search on the predictor;
* ``search.py`` / ``report.py`` — the settings, the run folder and the report;
* ``candidate.py``, ``executor.py``, ``store.py`` — training candidates in parallel
  (local processes or Ray) with an SQLite results store.
"""
