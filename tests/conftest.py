import numpy as np
import pytest
import torch

from bossflow.core._allocator import keep_freed_memory

keep_freed_memory()  # as the command line does (benchmarks/bench_allocator.py: 1.14-1.41x on glibc CPUs)

TEST_SEED = 1234


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(TEST_SEED)


def random_cost_matrix(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n + 1, n + 1) costs: random above the diagonal, +inf elsewhere."""
    c = np.full((n + 1, n + 1), np.inf)
    iu = np.triu_indices(n + 1, 1)
    c[iu] = rng.random(iu[0].size)
    return c


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """``bossflow demo --quick --quiet`` run once for the session: (exit code, its folder, what it printed)."""
    import contextlib
    import io

    from bossflow.cli import main

    out = tmp_path_factory.mktemp("demo") / "demo"
    printed = io.StringIO()
    torch.set_num_threads(1)
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--quick", "--quiet", "--out", str(out)])
    return code, out, printed.getvalue()


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # one thread: the tensors here are small, and a loaded 2-core machine stalls multi-threaded kernels
    torch.set_num_threads(1)
    yield


class Interrupting(torch.nn.Module):
    """gmm-2d that raises KeyboardInterrupt after ``limit`` calls, like a user's Ctrl-C."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        from bossflow.models import gmm_2d

        self.inner, self.limit, self.calls = gmm_2d(), limit, 0

    def forward(self, x, t):
        self.calls += 1
        if self.calls > self.limit:
            raise KeyboardInterrupt
        return self.inner(x, t)
