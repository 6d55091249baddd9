"""The CLI's output is unchanged by the restructure (issue 9): a golden comparison.

Each case in tests/golden/cases.py runs `python -m avatar` in a subprocess (fake NVML,
fresh temp dir) and its stdout, stderr, exit status and, for a multirun, the sweep's
files must equal tests/golden/expected/<case>.txt byte for byte once normalised
(temp dir, repo path, dates, times, host, RAM, hydra-core/omegaconf versions). The
expected files were taken from the code before the move; to take them again after an
intended change of output: `python -m tests.golden.capture [CASE ...]`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import hydra
import pytest
from golden.capture import expected_path, run_case
from golden.cases import CASES, Case

pytestmark = [
    pytest.mark.slow,
    # Hydra's own error texts differ in 1.4; the golden files hold 1.3's.
    pytest.mark.skipif(
        not hydra.__version__.startswith("1.3."),
        reason=f"golden files were taken with hydra-core 1.3, this is {hydra.__version__}",
    ),
]

PARALLEL_CASES = 2  # CI has 2 cores


@pytest.fixture(scope="module")
def outputs(request: pytest.FixtureRequest) -> Iterator[dict[str, Future[str]]]:
    """Every selected case started at once, two at a time; each test waits for its own."""
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    ]
    base_env = dict(os.environ)  # read here: other threads must not read os.environ
    with ThreadPoolExecutor(PARALLEL_CASES) as pool:
        futures = {case.name: pool.submit(run_case, case, base_env) for case in selected}
        try:
            yield futures
        finally:
            pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_cli_output_matches_the_golden_file(case: Case, outputs: dict[str, Future[str]]) -> None:
    expected = expected_path(case).read_text(encoding="utf-8")

    actual = outputs[case.name].result()

    if actual != expected:
        diff = difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=f"expected/{case.name}.txt",
            tofile="now",
        )
        pytest.fail("output differs from the golden file:\n" + "".join(diff), pytrace=False)
