import json

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.errors import FileFormatError, ScheduleError
from bossflow.schedules import SCHEDULE_FORMAT, base_grid


@pytest.mark.parametrize("family", [bf.uniform_schedule, bf.edm_schedule, bf.shifted_schedule])
@pytest.mark.parametrize("nfe", [1, 2, 3, 8, 100])
def test_families_are_valid(family, nfe):
    s = family(nfe)
    assert s.nfe == nfe and s.times.dtype == np.float64
    assert s.times[0] == 0.0 and s.times[-1] == 1.0 and np.all(np.diff(s.times) > 0)


def test_family_values():
    assert bf.uniform_schedule(4).times.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    # shift 1 is uniform; shift > 1 puts more steps near the noise end (small t)
    np.testing.assert_allclose(bf.shifted_schedule(5, shift=1.0).times, bf.uniform_schedule(5).times, atol=1e-15)
    assert np.all(bf.shifted_schedule(5, shift=3.0).times[1:-1] < bf.uniform_schedule(5).times[1:-1])
    sigma = 1 - bf.shifted_schedule(4, shift=3.0).times
    u = np.linspace(1, 0, 5)
    np.testing.assert_allclose(sigma, 3 * u / (1 + 2 * u), atol=1e-15)
    # EDM: interior times are 1 / (1 + sigma) of Karras' levels
    s = bf.edm_schedule(3, rho=7.0, sigma_min=0.002, sigma_max=80.0)
    karras = (80 ** (1 / 7) + np.array([0.5, 1.0]) * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(s.times[1:-1], 1 / (1 + karras), rtol=1e-12)


@pytest.mark.parametrize(
    "times, message",
    [
        ([0.0, 0.5, 0.5, 1.0], "strictly increasing"),
        ([0.0, 0.7, 0.3, 1.0], "strictly increasing"),
        ([0.1, 1.0], "start at 0"),
        ([0.0, 0.9], "end at 1"),
        ([0.0, float("nan"), 1.0], "non-finite"),
        ([0.0, float("inf"), 1.0], "non-finite"),
        ([0.0], "at least two"),
        ([[0.0, 1.0]], "1-D"),
        (["a", "b"], "numbers"),
    ],
)
def test_bad_times(times, message):
    with pytest.raises(ScheduleError, match=message):
        bf.Schedule(times)
    with pytest.raises(ScheduleError):
        bf.custom_schedule(times)


@pytest.mark.parametrize("nfe", [0, -2, 1.5, True])
@pytest.mark.parametrize("family", [bf.uniform_schedule, bf.edm_schedule, bf.shifted_schedule])
def test_bad_nfe(family, nfe):
    with pytest.raises(ScheduleError):
        family(nfe)


def test_bad_family_options():
    with pytest.raises(ScheduleError):
        bf.edm_schedule(4, rho=0)
    with pytest.raises(ScheduleError):
        bf.edm_schedule(4, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ScheduleError):
        bf.shifted_schedule(4, shift=-1.0)
    with pytest.raises(ScheduleError):
        base_grid("karras", 10)


def test_schedule_accepts_tensors_and_eval_times():
    s = bf.Schedule(torch.tensor([0.0, 0.3, 1.0]), eval_times=[0.1, 0.4], method="x")
    assert s.times.dtype == np.float64 and s.eval_times.tolist() == [0.1, 0.4]
    assert s.has_eval_times and s.evaluation_times.tolist() == [0.1, 0.4]
    assert not bf.uniform_schedule(2).has_eval_times
    assert bf.uniform_schedule(2).evaluation_times.tolist() == [0.0, 0.5]
    with pytest.raises(ScheduleError, match="one value per step"):
        bf.Schedule([0.0, 1.0], eval_times=[0.1, 0.2])
    with pytest.raises(ScheduleError, match="within"):
        bf.Schedule([0.0, 0.5, 1.0], eval_times=[0.1, 1.2])
    with pytest.raises(ValueError):
        s.times[0] = 0.5  # read-only


def test_to_sigmas():
    s = bf.Schedule([0.0, 0.2, 1.0])
    np.testing.assert_array_equal(s.to_sigmas(), [1.0, 0.8, 0.0])


def test_round_trip_single_and_several(tmp_path):
    s = bf.Schedule([0.0, 0.123456789012345678, 0.5, 1.0], eval_times=[0.01, 0.2, 0.6], method="bellman", cost=1.5)
    path = tmp_path / "one.json"
    s.save(path)
    back = bf.Schedule.load(path)
    assert np.array_equal(back.times, s.times) and np.array_equal(back.eval_times, s.eval_times)
    assert back.meta["method"] == "bellman" and back.meta["cost"] == 1.5
    assert json.loads(path.read_text())["format"] == SCHEDULE_FORMAT

    many = tmp_path / "many.json"
    bf.save_schedules(many, [bf.uniform_schedule(2), bf.uniform_schedule(4)], model="gmm-2d")
    loaded = bf.load_schedules(many)
    assert list(loaded) == [2, 4] and loaded[4].meta["model"] == "gmm-2d"
    assert bf.Schedule.load(many, nfe=4).nfe == 4
    with pytest.raises(FileFormatError, match="pass nfe"):
        bf.Schedule.load(many)
    with pytest.raises(FileFormatError, match="no schedule with NFE 3"):
        bf.Schedule.load(many, nfe=3)
    with pytest.raises(ScheduleError, match="distinct"):
        bf.save_schedules(many, [bf.uniform_schedule(2), bf.edm_schedule(2)])


def test_load_bad_files(tmp_path):
    with pytest.raises(FileFormatError, match="does not exist"):
        bf.Schedule.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FileFormatError, match="not valid JSON"):
        bf.Schedule.load(bad)
    bad.write_text(json.dumps({"format": "other", "schedules": []}))
    with pytest.raises(FileFormatError, match="format tag"):
        bf.Schedule.load(bad)
    bad.write_text(json.dumps({"format": SCHEDULE_FORMAT, "schedules": [{"times": [0.0, 0.7, 0.2, 1.0]}]}))
    with pytest.raises(FileFormatError, match="strictly increasing"):
        bf.Schedule.load(bad)
    bad.write_text(json.dumps({"format": SCHEDULE_FORMAT, "schedules": [{"nfe": 1}]}))
    with pytest.raises(FileFormatError, match="no 'times'"):
        bf.Schedule.load(bad)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "s.json"
    bf.uniform_schedule(3).save(path)
    bf.uniform_schedule(5).save(path)
    assert bf.Schedule.load(path).nfe == 5
    assert [p.name for p in path.parent.iterdir()] == ["s.json"]
