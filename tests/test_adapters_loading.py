"""`--model` with the adapters: LIBRARY:module:attribute prefixes, and factories returning wrapped models."""

import textwrap

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.adapters.flow_matching import FlowMatchingVelocity
from bossflow.adapters.torchcfm import TorchCFMVelocity
from bossflow.cli import main
from bossflow.errors import ModelSpecError
from bossflow.loading import load_model

USER_FILE = '''
import torch
import bossflow as bf
from bossflow.adapters import flow_matching, torchcfm, wrap_velocity

FLOW = bf.models.gmm_2d()


class FMModel(torch.nn.Module):
    """A flow_matching-style model: called model(x=..., t=...), returns the velocity."""

    sample_shape = (2,)

    def forward(self, x, t):
        return FLOW(x, t)


class CFMModel(torch.nn.Module):
    """A torchcfm-style (t, x) model."""

    def forward(self, t, x):
        return FLOW(x, t)


def make_fm():
    return FMModel()


def make_cfm_wrapped():
    """The factory form: any adapter, any options."""
    return torchcfm.wrap(CFMModel(), sample_shape=(2,))


def make_diffusers_style():
    """A diffusers-convention model (sigma timesteps, noise - data) through the conventions adapter."""
    return wrap_velocity(lambda x, s: -FLOW(x, 1 - s / 1000), 1000, "data_to_noise", sample_shape=(2,))
'''


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_flows.py"
    path.write_text(textwrap.dedent(USER_FILE))
    return path


def test_prefix_forms_wrap_with_the_adapter(user_file):
    flow = bf.models.gmm_2d()
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.full((5,), 0.4, dtype=torch.float64)
    loaded = load_model(f"flow_matching:{user_file}:make_fm")
    assert isinstance(loaded.model, FlowMatchingVelocity) and loaded.sample_shape == (2,)
    assert loaded.model_id == f"flow_matching:{user_file}:make_fm"
    torch.testing.assert_close(loaded.model(x, t), flow(x, t))
    loaded = load_model(f"torchcfm:{user_file}:CFMModel")  # a class is a factory
    assert isinstance(loaded.model, TorchCFMVelocity) and loaded.model.call == "tx" and loaded.sample_shape is None
    torch.testing.assert_close(loaded.model(x, t), flow(x, t))


def test_factories_returning_wrapped_models(user_file):
    flow = bf.models.gmm_2d()
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.full((5,), 0.7, dtype=torch.float64)
    for name in ("make_cfm_wrapped", "make_diffusers_style"):
        loaded = load_model(f"{user_file}:{name}")
        assert loaded.sample_shape == (2,)
        torch.testing.assert_close(loaded.model(x, t), flow(x, t))


def test_bad_prefixed_specs_say_what_is_wrong(user_file):
    with pytest.raises(ModelSpecError, match="no attribute"):
        load_model(f"flow_matching:{user_file}:nothing")
    with pytest.raises(ModelSpecError, match="does not exist"):
        load_model("torchcfm:missing_file.py:model")


def test_cli_schedule_with_a_prefixed_model_equals_the_native_flow(capsys, tmp_path, user_file):
    out_a, out_b = tmp_path / "a.json", tmp_path / "b.json"
    common = ["--method", "bellman", "--nfe", "3", "--samples", "16", "--grid-steps", "12", "--dtype", "float64", "--quiet"]
    assert main(["schedule", "--model", f"flow_matching:{user_file}:make_fm", *common, "--out", str(out_a)]) == 0
    assert main(["schedule", "--model", "gmm-2d", *common, "--out", str(out_b)]) == 0
    a, b = bf.Schedule.load(out_a), bf.Schedule.load(out_b)
    np.testing.assert_array_equal(a.times, b.times)
    assert a.meta["model"] == f"flow_matching:{user_file}:make_fm"
    # a factory of a wrapped model needs no --shape either
    assert main(["schedule", "--model", f"{user_file}:make_diffusers_style", *common]) == 0
    capsys.readouterr()
