"""Rendering Gaussians to images: gsplat on CUDA, a pure-PyTorch reference of the same maths elsewhere
(the differentiable truth), and a compiled (Numba) CPU rasterizer of the same maths for viewing."""

from .render import RenderOutput, backend_report, render, resolve_backend

__all__ = ["render", "RenderOutput", "resolve_backend", "backend_report"]
