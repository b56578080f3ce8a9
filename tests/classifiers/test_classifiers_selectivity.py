"""Class-mode selectivity (classifiers.selectivity): top modes per class and the class-mode sweeps."""

import numpy as np
import pytest
import torch
from _interventions_helpers import InterventionNet

from retina_codec.errors import ModesError

TORCH_THREADS = 1


# ---------------------------------------------------------------------------- classifier modes
def test_class_top_modes_need_alive_modes_and_classes_no_mode_tracks_are_not_swept():
    from retina_codec.classifiers.selectivity import class_mode_sweeps, top_class_modes

    labels = np.arange(12) % 3
    with pytest.raises(ModesError, match="no alive modes"):
        top_class_modes(np.zeros((12, 0)), labels)
    loadings = np.zeros((12, 2))
    loadings[labels == 1, 0] = 1.0  # mode 0 tracks class 1
    classes, best, r = top_class_modes(loadings, labels)
    assert best[1] == 0 and r[1] == pytest.approx(1.0)

    class Dec:  # the attribute class_mode_sweeps reads
        atoms_ = np.abs(np.random.default_rng(0).standard_normal((2, 16)))

    torch.manual_seed(0)
    model, x = InterventionNet().eval(), torch.randn(12, 1, 5, 5)
    with torch.no_grad():
        y = model(x).argmax(1).numpy()  # the intact model is right on every image: ratios are defined
    args = (model, "c1", x, y, Dec(), np.ones((12, 2)), labels, "contributions")
    # constant loadings: no mode tracks any class (r = -inf), so there is no top mode to sweep
    assert class_mode_sweeps(*args, kinds=("ablate",), fractions=(0.0, 0.5, 1.0)) == []


def test_class_sweeps_skip_classes_the_intact_model_never_gets_right_with_a_warning():
    # an untrained network (README's classify-stats with random weights) scored 0 on some class and the whole
    # analysis failed at its end ("the unmodified model scores 0.0"); such classes have no ratio: skipped
    from retina_codec.classifiers.selectivity import class_mode_sweeps

    class Dec:
        atoms_ = np.abs(np.random.default_rng(0).standard_normal((3, 16)))

    torch.manual_seed(0)
    model, x = InterventionNet().eval(), torch.randn(12, 1, 5, 5)
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    y = pred.copy()
    y[:4] = (pred[:4] + 1) % 3  # the model is wrong on these images
    loadings = np.eye(3)[y] + 0.01 * np.random.default_rng(1).random((12, 3))  # mode k tracks class k
    wrong = [c for c in range(3) if np.any(y == c) and not np.any((y == c) & (pred == c))]
    right = [c for c in range(3) if np.any((y == c) & (pred == c))]
    assert wrong and right, "the construction needs a class the model never gets right and one it does"
    with pytest.warns(RuntimeWarning, match="skipped classes"):
        sweeps = class_mode_sweeps(model, "c1", x, y, Dec(), loadings, y, "contributions", kinds=("ablate",),
                                   fractions=(0.0, 1.0))
    assert sorted(s.cls for s in sweeps) == right
