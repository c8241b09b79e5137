"""bossflow export and the ComfyUI node: a schedule as the numbers other samplers take."""

import json

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.adapters.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from bossflow.adapters.export import export_schedule
from bossflow.cli import main
from bossflow.errors import ScheduleError

TIMES = [0.0, 0.3, 0.7, 1.0]


@pytest.fixture
def schedule_file(tmp_path):
    path = tmp_path / "s.json"
    bf.save_schedules(path, [bf.Schedule(TIMES, method="bellman"), bf.uniform_schedule(2)])
    return path


def test_formats_follow_their_conventions():
    s = bf.Schedule(TIMES)
    np.testing.assert_allclose(export_schedule(s, "flow-matching"), TIMES)
    np.testing.assert_allclose(export_schedule(s, "comfyui"), [1.0, 0.7, 0.3, 0.0])
    assert export_schedule(s, "k-diffusion") == export_schedule(s, "comfyui")
    np.testing.assert_allclose(export_schedule(s, "diffusers"), [1.0, 0.7, 0.3])  # the scheduler appends the 0


def test_diffusers_sigmas_are_pre_inverted_for_the_recorded_scheduler():
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    s = bf.Schedule(TIMES, diffusers_scheduler=dict(scheduler.config))
    sigmas = export_schedule(s, "diffusers")
    scheduler.set_timesteps(sigmas=sigmas)
    np.testing.assert_allclose(1 - scheduler.sigmas.numpy(), TIMES, atol=1e-6)  # shift applied once, ending at t = 1
    assert len(scheduler.timesteps) == 3


def test_schedules_with_evaluation_times_or_olss_steps_are_refused():
    with pytest.raises(ScheduleError, match="--family times"):
        export_schedule(bf.Schedule(TIMES, eval_times=[0.1, 0.4, 0.8]), "comfyui")
    with pytest.raises(ScheduleError, match="unknown export format"):
        export_schedule(bf.Schedule(TIMES), "a1111")


def test_export_command_writes_stdout_or_a_file(schedule_file, tmp_path, capsys):
    assert main(["export", str(schedule_file), "--nfe", "3", "--format", "comfyui"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx([1.0, 0.7, 0.3, 0.0])
    out = tmp_path / "sigmas.json"
    assert main(["export", str(schedule_file), "--nfe", "3", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == pytest.approx([1.0, 0.7, 0.3])
    assert "pipe(prompt, sigmas=" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["--format", "comfyui"], "pick one with --nfe"),
    (["--nfe", "5"], "no schedule with NFE 5"),
])
def test_export_bad_input_is_one_line_and_exit_2(schedule_file, capsys, argv, words):
    assert main(["export", str(schedule_file), *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_comfyui_node_outputs_sigmas(schedule_file):
    node_class = NODE_CLASS_MAPPINGS["BossflowSigmas"]
    assert NODE_DISPLAY_NAME_MAPPINGS["BossflowSigmas"]
    assert node_class.RETURN_TYPES == ("SIGMAS",)
    assert set(node_class.INPUT_TYPES()["required"]) == {"schedule_file", "nfe"}
    (sigmas,) = getattr(node_class(), node_class.FUNCTION)(str(schedule_file), 3)
    assert sigmas.dtype == torch.float32
    torch.testing.assert_close(sigmas, torch.tensor([1.0, 0.7, 0.3, 0.0]))
    with pytest.raises(ScheduleError, match="NFE"):
        node_class().sigmas(str(schedule_file), 7)
