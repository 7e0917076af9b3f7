"""Progress of long work: the `"sparsedict"` logger and the `progress=` callbacks.

The reference for each record is the result it reports on: the training history of the run, the
chunk boundaries of the certificate.
"""

import logging

import numpy as np
import pytest
from problems import random_problem

import sparsedict as sd
from sparsedict import optimality

LAM = 0.1


@pytest.fixture
def problem():
    return random_problem(np.random.default_rng(0), n=20, d=5, k=7)


@pytest.mark.parametrize("method", ["alternating", "online"])
def test_learner_reports_every_chunk(problem, method, caplog):
    X, _ = problem
    records = []
    with caplog.at_level(logging.DEBUG, logger="sparsedict"):
        learned = sd.learn_dictionary(
            X, 4, LAM, method=method, max_steps=6, chunk_size=2, batch_size=8,
            stationarity_tol=0.0, progress=records.append,
        )  # fmt: skip
    assert [r.done for r in records] == [2, 4, 6] and {r.total for r in records} == {6}
    assert {r.task for r in records} == {f"learn_dictionary[{method}]"}
    for r in records:  # the metrics are the history's last step of each chunk
        np.testing.assert_allclose(r.metrics["objective"], learned.history.objective[r.done - 1])
        np.testing.assert_allclose(r.metrics["l0"], learned.history.l0[r.done - 1])
    logged = [m for m in caplog.messages if m.startswith(f"[learn_dictionary[{method}]]")]
    assert [m.split()[1] for m in logged] == ["2/6", "4/6", "6/6"]
    assert {r.levelno for r in caplog.records if r.message in logged} == {logging.DEBUG}


def test_verbose_shows_progress_on_stderr(problem, capsys):
    X, _ = problem
    sd.train_sae(X, 4, LAM, max_steps=4, chunk_size=2, batch_size=8, stationarity_tol=0.0)
    assert capsys.readouterr().err == ""  # silent by default
    sd.train_sae(
        X, 4, LAM, max_steps=4, chunk_size=2, batch_size=8, stationarity_tol=0.0, verbose=True
    )
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[:2] for line in lines] == [["[train_sae]", "2/4"], ["[train_sae]", "4/4"]]


def test_certify_chunked_reports_each_chunk_and_logs_tenths(problem, caplog):
    X, D = problem
    records = []
    with caplog.at_level(logging.DEBUG, logger="sparsedict"):
        optimality.certify_chunked(X, D, LAM, chunk_size=3, progress=records.append)
    assert [r.done for r in records] == [3, 6, 9, 12, 15, 18, 20]
    assert {(r.task, r.total) for r in records} == {("exact codes", 20)}
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="sparsedict"):
        optimality.certify_chunked(X, D, LAM, chunk_size=1)
    levels = [r.levelno for r in caplog.records if r.message.startswith("[exact codes]")]
    # 20 chunks: every one at DEBUG or INFO; INFO at the first and at each tenth (2, 4, ..., 20)
    assert len(levels) == 20 and levels.count(logging.INFO) == 11
    assert caplog.records[-1].message.startswith("[exact codes] 20/20")


def test_sweep_reports_buckets(problem):
    X, _ = problem
    records = []
    spec = sd.SweepSpec(widths=(2, 4), seeds=(0,), lams=(LAM,), max_steps=2, chunk_size=2)
    sd.run_sweep(X, spec, verbose=False, progress=records.append)
    buckets = [r for r in records if r.task == "sweep"]
    assert [(r.done, r.total) for r in buckets] == [(1, 2), (2, 2)]
    assert {r.task for r in records} == {"sweep", "sweep W=2", "sweep W=4"}
