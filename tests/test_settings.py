"""Every setting is read from its FOOLING_* variable, and a bad value names the variable."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from app.settings import MEGABYTES, Settings


def test_every_field_comes_from_its_variable(monkeypatch):
    given = {"FOOLING_PORT": "9001", "FOOLING_RUNTIME": " TORCH ", "FOOLING_BATCHING": "off",
             "FOOLING_DATA_DIR": "/srv/x", "FOOLING_ONNX_DIR": "", "FOOLING_DISK_QUOTA_MB": "1.5",
             "FOOLING_EVENTS_PER_SECOND": "2.5", "FOOLING_ADMIN_TOKEN": "t0ken", "FOOLING_MAX_PAUSE_S": "7"}
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    s = Settings.from_env()
    assert (s.port, s.runtime, s.batching, s.data_dir) == (9001, "torch", False, Path("/srv/x"))
    assert s.onnx_dir == Path("/srv/x") / "onnx"  # empty: the default place under the data directory
    assert (s.disk_quota_bytes, s.events_per_second, s.admin_token, s.max_pause_s) == (int(1.5 * 2**20), 2.5,
                                                                                      "t0ken", 7.0)
    assert s.workers == Settings().workers  # not set: the default


@pytest.mark.parametrize("f", [f for f in fields(Settings) if f.type in ("int", "float")], ids=lambda f: f.name)
def test_a_number_that_is_not_one_is_refused_by_name(monkeypatch, f):
    name = MEGABYTES.get(f.name, f.name.upper())
    monkeypatch.setenv(f"FOOLING_{name}", "lots")
    with pytest.raises(ValueError, match=f"FOOLING_{name}='lots' is not a valid"):
        Settings.from_env()
