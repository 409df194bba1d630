"""Micro-batching of contact actions into groups (pure asyncio, no I/O)."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass, field

import pytest

from services.crm_sync.grouping import GroupFormer


@dataclass(eq=False)
class Job:
    name: str
    contact: int
    future: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def key(self) -> Hashable:
        return self.contact

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


@dataclass
class Recorder:
    """A `process` that records its groups and settles every job after a pause."""

    pause: float = 0.0
    groups: list[list[str]] = field(default_factory=list)
    active: int = 0
    most_active: int = 0
    defer_once: set[str] = field(default_factory=set)

    async def __call__(self, jobs: list[Job]) -> list[Job]:
        self.groups.append([job.name for job in jobs])
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        await asyncio.sleep(self.pause)
        self.active -= 1
        deferred = [job for job in jobs if job.name in self.defer_once]
        self.defer_once -= {job.name for job in deferred}
        for job in jobs:
            if job not in deferred:
                job.future.set_result(job.name)
        return deferred


async def run(former: GroupFormer[Job], jobs: list[Job]) -> list[str]:
    for job in jobs:
        former.submit(job)
    return await asyncio.wait_for(asyncio.gather(*(job.future for job in jobs)), 5)


async def test_jobs_arriving_together_form_one_group() -> None:
    process = Recorder()
    former = GroupFormer(process, max_size=10, window_s=0.05, max_active=2)
    jobs = [Job(f"j{i}", i) for i in range(6)]

    assert await run(former, jobs) == [job.name for job in jobs]
    assert process.groups == [[f"j{i}" for i in range(6)]]


async def test_groups_are_bounded() -> None:
    process = Recorder()
    former = GroupFormer(process, max_size=4, window_s=0.05, max_active=2)

    await run(former, [Job(f"j{i}", i) for i in range(10)])

    assert [len(group) for group in process.groups] == [4, 4, 2]


async def test_one_contact_is_never_in_two_groups_at_once() -> None:
    process = Recorder(pause=0.05)
    former = GroupFormer(process, max_size=10, window_s=0.01, max_active=3)
    jobs = [Job("first", 1), Job("other", 2), Job("second", 1), Job("third", 1)]

    await run(former, jobs)

    assert process.groups == [["first", "other"], ["second"], ["third"]]


async def test_no_more_groups_run_at_once_than_allowed() -> None:
    process = Recorder(pause=0.03)
    former = GroupFormer(process, max_size=2, window_s=0.0, max_active=2)

    await run(former, [Job(f"j{i}", i) for i in range(12)])

    assert process.most_active == 2
    assert len(process.groups) == 6


async def test_a_lone_job_waits_the_window_then_goes_alone() -> None:
    process = Recorder()
    former = GroupFormer(process, max_size=10, window_s=0.05, max_active=2)
    loop = asyncio.get_running_loop()
    started = loop.time()

    await run(former, [Job("alone", 1)])

    assert process.groups == [["alone"]]
    assert loop.time() - started >= 0.05


async def test_deferred_jobs_are_queued_again() -> None:
    process = Recorder(defer_once={"busy"})
    former = GroupFormer(process, max_size=10, window_s=0.01, max_active=2)

    assert await run(former, [Job("busy", 1), Job("free", 2)]) == ["busy", "free"]
    assert process.groups == [["busy", "free"], ["busy"]]


async def test_a_failing_group_fails_its_jobs_and_not_the_others() -> None:
    async def process(jobs: list[Job]) -> list[Job]:
        if any(job.contact == 1 for job in jobs):
            raise RuntimeError("portal exploded")
        for job in jobs:
            job.future.set_result(job.name)
        return []

    former = GroupFormer(process, max_size=1, window_s=0.0, max_active=1)
    bad, good = Job("bad", 1), Job("good", 2)
    former.submit(bad)
    former.submit(good)

    with pytest.raises(RuntimeError, match="exploded"):
        await bad.future
    assert await good.future == "good"


def test_sizes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GroupFormer(Recorder(), max_size=0, window_s=0.1, max_active=1)
