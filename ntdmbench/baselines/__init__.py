"""The paper's baselines: NeMo, ResNet50 pose and class, StarMap, multi-task Mask R-CNN, Bayesian-Amodal."""
