"""NeMo: neural mesh models of contrastive features, trained per category and fitted by render-and-compare.

``model`` (the registered predictor), ``category`` (network + meshes + banks), ``training``,
``inference`` and ``official`` (released checkpoint layouts).
"""
