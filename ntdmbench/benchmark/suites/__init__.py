"""Suites: one command from data to a finished report (the paper's Tables 1-3), split by job.

``schema`` reads and validates the YAML, ``data`` generates the synthetic preset, ``training`` makes the
checkpoints, ``prediction`` runs every row on every condition, ``run`` drives the stages and writes
``index.json`` (``index``), ``cli`` is ``ntdmbench suite run|show`` and writes the report afterwards.
The shipped suites are the YAML files in this folder.

A suite is a YAML file (a name from ``ntdmbench/benchmark/suites/`` or a path)::

    name: quick-table1
    extends: quick            # start from another suite: mappings merge key by key (models.ROW.args too);
                              # ``tables`` lists the parent's table ids, or mappings merged onto the
                              # parent's table of the same id
    synthetic: quick          # generate this synthetic preset under --root when it is not there yet
    roots: {pascal3d: pascal3d, oodcv: oodcv}   # dataset family -> folder under --root
    train: pascal3d/train     # what models are trained on (a table may override it)
    register: {my-model: "my_pkg.model:MyModel"}  # extra models, as an entry point would add them
    models:                   # table rows
      ntdm:
        model: ntdm           # registry name (default: the row id)
        label: NTDM           # row label in the tables
        args: {}              # constructor args for training and prediction (part of the training key)
        eval_args: {}         # constructor args for prediction only (inference switches)
        train: true           # false: nothing to train (oracle, random)
        per_category: false   # one training job per category, spread over ranks, joined by model.merge()
        batch_size: 8
    tables:
      - id: table1
        benchmark: occluded-pascal3d
        conditions: {L0: pascal3d/val, L1: occluded-pascal3d/val/L1}
        clean: L0             # reference of the drop column
        mean: [L1]            # pooled over these samples into a ``mean`` column
        metrics: [acc_pi6, acc_pi18, amodal_iou, top1]
        categories: null      # only these categories (Table 3: sofa, bus, motorbike)
        layout: wide          # LaTeX: one row per model (wide) or a block per metric (stacked)
        models: [ntdm]

Stages, each resumable: data (generated once), training (a checkpoint per model keyed by a hash of
its model, args, training set and seed, under ``OUT/checkpoints``; a killed training resumes from
its ``.resume`` state), prediction and scoring (``ntdmbench run``'s run directories under ``OUT``,
which skip finished ids), then the report under ``OUT/suites/NAME/``. A model that cannot be built,
trained or run is recorded and the suite goes on; the report shows its cells as missing.
"""
