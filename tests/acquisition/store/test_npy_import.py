"""Import of the paper's .npy layout (rows in horizontal-snake order) and the libs-acquire CLI."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.cli import main
from acquisition.npy_import import import_npy
from acquisition.store import PairedMapReader, validate

NY, NX, N1, N2 = 4, 5, 12, 9


def snake_rows(ny: int, nx: int) -> list[tuple[int, int]]:
    """Where row k of the .npy files belongs, written out by hand for the paper's layout."""
    rows = []
    for iy in range(ny):
        columns = range(nx) if iy % 2 == 0 else range(nx - 1, -1, -1)
        rows.extend((iy, ix) for ix in columns)
    return rows


@pytest.fixture
def dataset(tmp_path):
    """A tiny dataset in the published layout; row k holds the value k in every pixel (+0.5 for s2)."""
    folder = tmp_path / "paper"
    folder.mkdir()
    rows = NY * NX
    np.save(folder / "s1_val.npy", np.repeat(np.arange(rows, dtype=np.float64)[:, None], N1, axis=1))
    np.save(folder / "s2_val.npy", np.repeat(np.arange(rows, dtype=np.float32)[:, None] + 0.5, N2, axis=1))
    np.save(folder / "s1_wavelengths.npy", np.linspace(245, 407, N1))
    np.save(folder / "s2_wavelengths.npy", np.linspace(260, 370, N2))
    return folder


def test_snake_rows_land_where_they_belong(dataset, tmp_path):
    out = import_npy(dataset, "val", tmp_path / "val.h5", shape=(NY, NX), progress=False)
    validate(out)
    with PairedMapReader(out) as reader:
        assert reader.shape == (NY, NX) and reader.n_acquired == NY * NX
        assert reader.layout.order == "snake" and reader.layout.step_um == (40.0, 40.0)
        shots = reader.scan_values("shot_id")
        stamps = reader.scan_values("timestamp")
        positions = reader.scan_values("position")
        for k, (iy, ix) in enumerate(snake_rows(NY, NX)):
            spot = reader.spot(iy, ix)
            np.testing.assert_array_equal(spot["primary"], np.full(N1, k, np.float32))
            np.testing.assert_array_equal(spot["secondary"], np.full(N2, k + 0.5, np.float32))
            assert shots[iy, ix] == k
            np.testing.assert_array_equal(positions[iy, ix], [40.0 * ix, 40.0 * iy])
        assert np.isnan(stamps).all()
        np.testing.assert_array_equal(reader.wavelengths("primary"), np.linspace(245, 407, N1))
        assert reader.end_time is not None


def test_test_split_defaults_to_a_20_um_step(dataset, tmp_path):
    for name in ("s1", "s2"):
        (dataset / f"{name}_val.npy").rename(dataset / f"{name}_test.npy")
    out = import_npy(dataset, "test", tmp_path / "test.h5", shape=(NY, NX), progress=False)
    with PairedMapReader(out) as reader:
        assert reader.layout.step_um == (20.0, 20.0)


def test_row_count_must_match_the_shape(dataset, tmp_path):
    with pytest.raises(ValueError, match=r"s1_val.npy has 20 rows, but a 266x500 map needs 133000"):
        import_npy(dataset, "val", tmp_path / "val.h5", progress=False)
    assert not (tmp_path / "val.h5").exists()


def test_unpaired_or_inconsistent_files_are_refused(dataset, tmp_path):
    np.save(dataset / "s2_val.npy", np.zeros((NY * NX - 1, N2), np.float32))
    with pytest.raises(ValueError, match="s1_val.npy has 20 rows but s2_val.npy has 19"):
        import_npy(dataset, "val", tmp_path / "a.h5", shape=(NY, NX), progress=False)
    np.save(dataset / "s2_val.npy", np.zeros((NY * NX, N2 + 1), np.float32))
    with pytest.raises(ValueError, match="10 pixels, but s2_wavelengths.npy has 9"):
        import_npy(dataset, "val", tmp_path / "b.h5", shape=(NY, NX), progress=False)
    (dataset / "s1_wavelengths.npy").unlink()
    with pytest.raises(FileNotFoundError, match="s1_wavelengths.npy: missing"):
        import_npy(dataset, "val", tmp_path / "c.h5", shape=(NY, NX), progress=False)


def test_cli_import(dataset, tmp_path, capsys):
    out = tmp_path / "cli.h5"
    args = ["import-npy", str(dataset), "--split", "val", "--shape", f"{NY}x{NX}", "--out", str(out),
            "--no-progress"]
    assert main(args) == 0
    assert str(out) in capsys.readouterr().out
    with PairedMapReader(out) as reader:
        assert reader.n_acquired == NY * NX
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert main(["import-npy", str(dataset), "--split", "val", "--out", str(tmp_path / "x.h5")]) == 2
    assert "needs 133000" in capsys.readouterr().err


def test_cli_help_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "example" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["import-npy", "--help"])
    assert info.value.code == 0
    assert "libs-acquire import-npy" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["import-npy", "somewhere", "--split", "val", "--shape", "12by4", "--out", "x.h5"])
    assert info.value.code == 2
    assert "NYxNX" in capsys.readouterr().err
