"""Figure-capturing helpers for the plot and report tests (not a test module)."""


def capture_figures(monkeypatch, module):
    """Make ``module``'s save step keep the figure (returned list) instead of closing it."""
    figs = []

    def keep(fig, path, *a, **k):
        figs.append(fig)
        return str(path)

    monkeypatch.setattr(module, "save_figure" if hasattr(module, "save_figure") else "_save", keep)
    return figs
