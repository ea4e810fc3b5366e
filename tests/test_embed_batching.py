"""Concurrent questions share one embedding batch (`LocalEmbedder.encode_query`).

The fast tests replace `encode_queries` with a fake that can be held inside a batch, so that
which questions go together is decided by the test, not by the scheduler.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from qa.config import Settings
from qa.embed import LocalEmbedder
from tests.fakes import FakeEmbedder


class HeldEncoder:
    """A fake `encode_queries` that records its batches; the first one waits for `release()`."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls: list[list[str]] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        self.fail_on_call = fail_on_call
        self.vectors = FakeEmbedder()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.started.set()
            assert self.gate.wait(10), "the test never released the first batch"
        if self.fail_on_call == len(self.calls):
            raise RuntimeError("encoder broke")
        return self.vectors.encode_queries(texts)

    def release(self) -> None:
        self.gate.set()


def embedder_with(encoder: HeldEncoder, batch: int = 32) -> LocalEmbedder:
    embedder = LocalEmbedder(Settings(query_batch_size=batch))
    embedder.encode_queries = encoder  # the model is never loaded
    return embedder


def ask_while_held(embedder: LocalEmbedder, encoder: HeldEncoder, questions: list[str]) -> list:
    """Ask "first" (its batch is held), then `questions` from threads; release once all wait.

    Returns each question's vector or exception, in the order of `questions`, then "first"'s.
    """

    def ask(text: str):
        try:
            return embedder.encode_query(text)
        except Exception as exc:  # noqa: BLE001 -- the tests look at what each caller got
            return exc

    with ThreadPoolExecutor(len(questions) + 1) as pool:
        first = pool.submit(ask, "first")
        assert encoder.started.wait(10)
        others = [pool.submit(ask, q) for q in questions]
        deadline = time.monotonic() + 10
        # Every other asker waits on the condition (CPython's list of its waiters) for a batch.
        while len(embedder._queries._waiters) < len(questions):
            assert time.monotonic() < deadline, "the questions never queued"
            time.sleep(0.005)
        encoder.release()
        return [f.result(10) for f in others] + [first.result(10)]


def test_questions_asked_during_a_batch_go_together_in_the_next_one():
    encoder = HeldEncoder()
    embedder = embedder_with(encoder)
    questions = [f"question {n}" for n in range(7)]

    results = ask_while_held(embedder, encoder, questions)

    assert encoder.calls[0] == ["first"]
    assert sorted(encoder.calls[1]) == sorted(questions) and len(encoder.calls) == 2
    for text, vector in zip([*questions, "first"], results):
        np.testing.assert_array_equal(vector, FakeEmbedder().encode_query(text))
        assert not vector.flags.writeable


def test_the_same_question_asked_at_once_is_embedded_once():
    encoder = HeldEncoder()
    embedder = embedder_with(encoder)
    questions = ["same"] * 5 + ["first", "other"]

    results = ask_while_held(embedder, encoder, questions)

    assert encoder.calls[0] == ["first"] and sorted(encoder.calls[1]) == ["other", "same"]
    assert len(encoder.calls) == 2
    for text, vector in zip([*questions, "first"], results):
        np.testing.assert_array_equal(vector, FakeEmbedder().encode_query(text))


def test_batches_are_at_most_query_batch_size():
    encoder = HeldEncoder()
    embedder = embedder_with(encoder, batch=3)

    ask_while_held(embedder, encoder, [f"q{n}" for n in range(7)])

    assert [len(call) for call in encoder.calls] == [1, 3, 3, 1]


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_call_works():
    encoder = HeldEncoder(fail_on_call=2)
    embedder = embedder_with(encoder)
    questions = ["a", "b", "b", "c"]

    results = ask_while_held(embedder, encoder, questions)

    assert all(isinstance(r, RuntimeError) for r in results[:-1]), results
    assert isinstance(results[-1], np.ndarray)  # "first" was in the batch before
    vector = embedder.encode_query("b")  # not wedged, and the failure was not cached
    np.testing.assert_array_equal(vector, FakeEmbedder().encode_query("b"))
    assert encoder.calls[-1] == ["b"]


def test_a_lone_question_is_one_batch_then_cached():
    encoder = HeldEncoder()
    encoder.release()
    embedder = embedder_with(encoder)

    first = embedder.encode_query("alone")
    again = embedder.encode_query("alone")

    assert encoder.calls == [["alone"]] and again is first


def test_batch_size_1_embeds_each_question_on_its_own_concurrently():
    calls: list[list[str]] = []
    inside = threading.Barrier(4, timeout=10)  # passes only if all 4 are inside at once

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        inside.wait()
        return FakeEmbedder().encode_queries(texts)

    embedder = LocalEmbedder(Settings(query_batch_size=1))
    embedder.encode_queries = encode
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(embedder.encode_query, ["a", "b", "c", "d"]))

    assert sorted(calls) == [["a"], ["b"], ["c"], ["d"]]


@pytest.mark.slow
def test_concurrent_questions_embed_as_they_do_one_at_a_time(seed_facts):
    from qa.embed import get_embedder

    questions = [q for fact in seed_facts for q in fact["questions"].values()][:16]
    embedder = get_embedder(Settings())  # the model already loaded by the other slow tests
    alone = np.stack([embedder.encode_queries([q])[0] for q in questions])
    batches: list[int] = []
    encode = embedder.encode_queries

    def counting(texts: list[str]) -> np.ndarray:
        batches.append(len(texts))
        return encode(texts)

    # An empty cache, batching on; its batches go to the loaded model.
    fresh = LocalEmbedder(embedder.settings.model_copy(update={"query_batch_size": 32}))
    fresh.encode_queries = counting
    start = threading.Barrier(len(questions))

    def ask(text: str) -> np.ndarray:
        start.wait()
        return fresh.encode_query(text)

    with ThreadPoolExecutor(len(questions)) as pool:
        together = np.stack(list(pool.map(ask, questions)))

    assert sum(batches) == len(questions) and len(batches) < len(questions), batches
    cosines = np.sum(alone * together, axis=1)  # both normalized
    assert cosines.min() >= 0.9999, cosines
