"""NTDM: neural textured deformable meshes (paper §3)."""
