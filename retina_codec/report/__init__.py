"""The HTML report of a demo folder: one self-contained file with every figure embedded as base64 PNG.

>>> from retina_codec.report import build_report
>>> build_report("demo-out")          # -> demo-out/report.html
"""

from .builder import build_report
from .stores import DemoFolder, read_fit

__all__ = ["build_report", "DemoFolder", "read_fit"]
