"""Synthetic PASCAL3D+-style benchmark generator: procedural CAD, rendered scenes, occluders, OOD splits."""
