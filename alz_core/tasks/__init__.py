"""Proxy tasks: real OpenMMLab trainings that score candidate losses."""

from .base import ProxyResult, ProxyTask

__all__ = ["ProxyResult", "ProxyTask"]
