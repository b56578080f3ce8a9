"""The store layer: one codec for attributes and JSON (:mod:`.codec`) and, per store kind, one schema with
its writer and reader, used by everyone who writes or reads that file.

Below every computing package: it imports only :mod:`retina_codec.errors`, :mod:`retina_codec.io_utils`
and the other base modules, never a package that computes.
"""

from .codec import (
           decode_attr,
           decode_attrs,
           encode_attr,
           open_h5,
           read_attr,
           read_json,
           store_errors,
           to_json,
           write_json,
)

__all__ = ["decode_attr", "decode_attrs", "encode_attr", "open_h5", "read_attr", "read_json", "store_errors",
           "to_json", "write_json"]
