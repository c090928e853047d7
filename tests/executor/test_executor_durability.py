"""What a power cut may take: only commits nothing outside has acted on (docs/receipts.md#durability).

A durable commit (synchronous=FULL) syncs the whole log before it. So the
rule is checked where it matters: the intent is durable before its tool is
called, and the approval is answered only after a durable commit that
follows every write it reports.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from executor_support import effects, running

from fibric import store
from fibric.store import backends


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Every write transaction of the process, in order: (the store function that made it, durable)."""
    made: list[tuple[str, bool]] = []
    real = backends.SQLiteBackend.transaction

    @contextlib.contextmanager
    def transaction(self: Any, *, write: bool, lock_key: str | None = None, durable: bool = True
                    ) -> Iterator[Any]:
        caller = sys._getframe(2).f_code.co_name
        with real(self, write=write, lock_key=lock_key, durable=durable) as cur:
            yield cur
        if write:
            made.append((caller, durable))

    monkeypatch.setattr(backends.SQLiteBackend, "transaction", transaction)
    return made


def test_an_intent_is_durable_before_its_call_and_the_answer_after_everything_it_reports(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path, commits: list[tuple[str, bool]]
) -> None:
    if state.dialect != "sqlite":
        pytest.skip("the embedded default's commits are the ones traced here")
    with running(state, tenant, tmp_path) as fibric:
        plan = fibric.propose()
        commits.clear()
        with fibric.client() as c:
            body = c.post(f"/v1/plans/{plan.id}/approve", json={}).json()
        assert [r["outcome"] for r in body["results"]] == ["applied", "applied"]
        assert effects(fibric.orders_db) == 2
    names = [name for name, _ in commits]
    intents = [n for n, (name, _) in enumerate(commits) if name == "record"]
    assert len(intents) == 2 and all(commits[n][1] for n in intents)  # FULL before each call
    end = names.index("conclude")  # the results, the run's count, the execution's end: one commit
    assert commits[end][1]  # the execution's end is durable ...
    for name in ("approve", "begin_execution", "settle"):
        assert name in names[:end]  # ... and syncs every write the answer reports, made before it
    before = [durable for name, durable in commits[:intents[0]]
              if name in ("approve", "begin_execution", "acquire")]
    assert before and not any(before)  # the bookkeeping before it is NORMAL: the intent syncs it
