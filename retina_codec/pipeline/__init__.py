"""The pipeline layer: the demo folder's layout (:mod:`.layout`), the resume rule (:mod:`.freshness`) and the
demo's stages (:mod:`.stages`, with :func:`~retina_codec.pipeline.stages.run_demo`).

The report (:mod:`retina_codec.report`) uses the layout and the resume rule; the stages use the report, so
this package's ``__init__`` imports only the first two (``from retina_codec.pipeline.stages import run_demo``).
"""

from .freshness import file_signature, input_signatures, is_fresh
from .layout import DEMO_NAMES, DemoLayout, check_out_folder, default_model_path

__all__ = ["DEMO_NAMES", "DemoLayout", "check_out_folder", "default_model_path", "file_signature",
           "input_signatures", "is_fresh"]
