"""Figure conventions: symmetric red-ON / blue-OFF RF scales with the decompose sign, time axes in ms oldest
first, fit panels that keep negative bars in view."""

from __future__ import annotations

import numpy as np
from _plot_helpers import capture_figures


# ------------------------------------------------------------------------------------ figure conventions
def _on_off_rf(h=10, size=15, sign=1.0):
    """A separable RF ``(h, size, size)``: Gaussian centre of ``sign`` × a biphasic time course that peaks
    positive at the second-to-last frame (oldest frame first)."""
    yy, xx = np.mgrid[:size, :size]
    space = np.exp(-((yy - 7) ** 2 + (xx - 5) ** 2) / 4.0)
    t = np.zeros(h)
    t[-2], t[-5] = 1.0, -0.4
    return sign * t[:, None, None] * space[None]


def test_rf_maps_use_a_symmetric_red_on_blue_off_scale_with_the_decompose_sign(monkeypatch):
    import matplotlib.pyplot as plt

    import retina_codec.plots.rf as prf
    import retina_codec.plots.rf_truth as ptruth
    from retina_codec.rf.decompose import space_time_svd

    on, off = _on_off_rf(sign=1.0), _on_off_rf(sign=-1.0)
    figs = capture_figures(monkeypatch, ptruth)
    lags_ms = (np.arange(10) - 10) * 10.0
    ptruth.plot_sta_model_truth({"STA": np.stack([on, off])}, "unused.png", ["on", "off"], lags_ms=lags_ms)
    fig = figs[0]
    ims = [ax.images[0] for ax in fig.axes if ax.images]
    for im, rf in zip(ims, (on, off)):
        lo, hi = im.get_clim()
        assert lo == -hi and im.get_cmap().name == "RdBu_r"
        shown = np.asarray(im.get_array())
        np.testing.assert_allclose(shown, space_time_svd(rf).spatial[0], atol=1e-12)  # rf.decompose's sign
        centre = im.get_cmap()(im.norm(shown[7, 5]))
        assert (centre[0] > centre[2]) == (rf is on)  # ON centre red, OFF centre blue
    lines = [ax.get_lines()[0] for ax in fig.axes if not ax.images and ax.get_lines()]
    for line in lines:  # the time course: oldest frame left, lags in ms, positive at the peak frame
        np.testing.assert_array_equal(line.get_xdata(), lags_ms)
        assert np.argmax(line.get_ydata()) == 8 and line.get_ydata()[8] > 0
    plt.close("all")

    figs = capture_figures(monkeypatch, prf)
    sp = np.stack([space_time_svd(on).spatial[0], space_time_svd(off).spatial[0]])
    prf.plot_rf_grid(sp, "unused.png", titles=["on", "off"])
    for ax, sign in zip(figs[0].axes, (1, -1)):
        im = ax.images[0]
        assert im.get_clim()[0] == -im.get_clim()[1]
        rgba = im.get_cmap()(im.norm(np.asarray(im.get_array())[7, 5]))
        assert (rgba[0] > rgba[2]) == (sign > 0)
    plt.close("all")


def test_conditioned_gallery_time_axes_are_in_ms_oldest_first(monkeypatch):
    import matplotlib.pyplot as plt

    import retina_codec.plots.rf as prf
    from retina_codec.rf.decompose import space_time_svd

    rf = _on_off_rf()
    c = space_time_svd(rf)
    s, t = c.spatial[0], c.temporal[0]
    cond = {"mean_spatial": s[None], "mean_temporal": t[None], "mode_spatial": np.stack([s[None]] * 2),
            "mode_temporal": np.stack([t[None]] * 2), "combo_spatial": s[None, None], "combo_temporal": t[None, None],
            "combos": [(0, 1)], "combo_frequency": np.array([0.5]), "mode_count": np.array([3, 4])}
    figs = capture_figures(monkeypatch, prf)
    lags_s = (np.arange(10) - 10) / 100.0
    prf.plot_conditioned_gallery(cond, 0, "unused.png", lags_s=lags_s)
    time_axes = [ax for ax in figs[0].axes if ax.get_lines() and ax.get_visible() and ax.axison]
    assert len(time_axes) == 4
    for ax in time_axes:
        np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), lags_s * 1e3)  # -100 ... -10 ms, left to right
        assert ax.get_xlabel() == "ms"
    plt.close("all")


def test_fit_panel_keeps_negative_true_rate_bars_in_view(monkeypatch):
    import matplotlib.pyplot as plt

    import retina_codec.plots.fit as pfit

    figs = capture_figures(monkeypatch, pfit)
    pfit.plot_fit_per_cell({"whitenoise": (np.array([0.5, 0.1]), np.array([0.4, -0.6]))}, ["a", "b"], "unused.png",
                           cell_types=["ON", "OFF"])
    ax = figs[0].axes[0]
    assert ax.get_ylim()[0] < -0.6
    labels = ax.get_xticklabels()
    assert [lab.get_color() for lab in labels] == ["#c0392b", "#1f5fa8"]  # ON red, OFF blue
    plt.close("all")
