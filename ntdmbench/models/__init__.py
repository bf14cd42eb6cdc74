"""Predictor interface, model registry and the shared 3D building blocks (camera, meshes, rasterizer)."""
