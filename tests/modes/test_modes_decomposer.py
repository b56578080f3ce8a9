"""ModeDecomposer settings and fitting contract: clear errors for bad settings (also on the command line),
reproducible fits, a self-describing modes file."""


import h5py
import numpy as np
import pytest
import torch

from retina_codec.cli.main import main
from retina_codec.errors import ModesError
from retina_codec.modes import ModeDecomposer, planted_dictionary
from retina_codec.modes.store import write_modes

TORCH_THREADS = 1


@pytest.fixture(scope="module")
def planted():
    return planted_dictionary(n_samples=600, n_features=8, n_atoms=6, n_active=2, seed=1)


@pytest.mark.parametrize("extra", [["--kind", "topk", "--k", "8", "--n-modes", "4"], ["--threshold", "1.5"],
                                   ["--device", "gpu"], ["--batch-size", "0"], ["--learning-rate", "0"]])
def test_cli_reports_invalid_sae_settings_as_one_line_and_exit_2(tmp_path, planted, capsys, extra):
    from _modes_helpers import write_store

    src = write_store(tmp_path / "contrib.h5", planted.X)
    rc = main(["-q", "modes", str(src), "--layer", "conv2", "--out", str(tmp_path / "m.h5"),
               "--max-epochs", "1", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert not (tmp_path / "m.h5").exists()


def test_validation_fraction_that_leaves_no_training_rows_is_named(planted):
    # round(0.95 · 10) = 10 rows held out: formerly a NaN mean and "loadings: expected finite values"
    with pytest.raises(ModesError, match=r"validation_fraction: 0.95 of 10 samples .* no training samples"):
        ModeDecomposer(kind="topk", k=2, n_modes=8, validation_fraction=0.95, quiet=True).fit(planted.X[:10])


@pytest.mark.parametrize(("param", "value"), [("batch_size", 0), ("learning_rate", -1e-3), ("max_epochs", -1)])
def test_optimisation_settings_are_validated_in_fit(planted, param, value):
    with pytest.raises(ModesError, match=param):
        ModeDecomposer(kind="topk", k=2, quiet=True, **{param: value}).fit(planted.X)


# ----------------------------------------------------------------------------- fitting contract
def test_fit_is_reproducible_whatever_the_global_rng_state_and_leaves_it_untouched(planted):
    fits = []
    for global_seed in (1, 99):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        dec = ModeDecomposer(kind="batchtopk", k=2, n_modes=24, max_epochs=2, quiet=True, random_state=5)
        fits.append(dec.fit(planted.X))
        assert torch.equal(torch.get_rng_state(), before)
    np.testing.assert_array_equal(fits[0].atoms_, fits[1].atoms_)
    np.testing.assert_array_equal(fits[0].transform(planted.X), fits[1].transform(planted.X))


def test_every_dataset_of_a_modes_file_carries_a_description(tmp_path, planted):
    dec = ModeDecomposer(kind="codec", n_modes=16, max_epochs=1, quiet=True).fit(planted.X)
    path = write_modes(tmp_path / "m.h5", dec, X=planted.X)
    missing = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: missing.append(name)
                     if isinstance(obj, h5py.Dataset) and "description" not in obj.attrs else None)
    assert missing == []
