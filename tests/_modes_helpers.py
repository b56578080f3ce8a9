"""A hand-written contribution store (the layout retina_codec writes), for modes tests."""

import h5py
import numpy as np


def write_store(path, x, layer="conv2", per_target=False, complete=True):
    """A contribution store in the layout of retina_codec/contributions/store.py."""
    n = x.shape[0]
    with h5py.File(path, "w") as f:
        f.attrs["method"] = "conductance"
        f.attrs["steps"] = 20
        f.attrs["target"] = '{"name": "surprisal"}'
        f.attrs["reduction"] = '["ei_split", "spatial_sum"]'
        f.attrs["model_hash"] = "abc123"
        f.attrs["complete"] = complete
        f.create_dataset("bins", data=np.arange(100, 100 + n, dtype=np.int64))
        f.create_dataset("f_x", data=np.zeros(n))
        f.create_dataset("f_baseline", data=np.zeros(n))
        ds = f.create_dataset(f"contributions/{layer}", data=x)
        ds.attrs["dims"] = '["bin", "target", "feature0"]' if per_target else '["bin", "feature0"]'
        f.create_dataset("contributions/conv1", data=x[..., :4])
    return path
