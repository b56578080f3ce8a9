"""The HTML report of a demo folder: one self-contained file with every figure embedded as base64 PNG.

>>> from retina_codec.report import build_report
>>> build_report("demo-out")          # -> demo-out/report.html

It reads the stores named by :mod:`retina_codec.pipeline.layout` with their readers in
:mod:`retina_codec.stores`.
"""

from ..pipeline.layout import DemoLayout
from ..stores.fit import read_fit
from .builder import build_report

#: the demo folder's layout (the name the report has always exported)
DemoFolder = DemoLayout

__all__ = ["build_report", "DemoFolder", "read_fit"]
