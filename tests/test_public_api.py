import bossflow


def test_every_public_name_imports():
    for name in bossflow.__all__:
        assert getattr(bossflow, name) is not None, name


def test_design_api_names_exist():
    for name in ["uniform_schedule", "edm_schedule", "shifted_schedule", "GaussianMixtureFlow", "euler", "heun",
                 "reference_solve", "cost_matrix", "bellman_path", "bellman_paths", "Schedule"]:
        assert name in bossflow.__all__
