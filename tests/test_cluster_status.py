"""The pure state logic behind ``wildsci build --status``: one row per rank over its phases, and what is blocked."""

from __future__ import annotations

from wildsci.cluster.status import NEVER, RankView, combine_phases, mark_blocked


def _views(*states: tuple[str, str]) -> list[RankView]:
    return [RankView(rank, state, detail=detail) for rank, (state, detail) in enumerate(states)]


def test_a_rank_shows_its_generate_phase_until_it_is_done():
    generate = _views(("running", ""), ("failed", "out of memory"), ("done", ""), ("pending", "Resources"))
    build = _views(("not started", ""), ("not started", ""), ("pending", "Dependency"), ("not started", ""))
    rows = combine_phases(generate, build)
    assert [(v.state, v.detail) for v in rows] == [
        ("running", "generating"),
        ("failed", "out of memory"),  # a failure's cause is shown as it is
        ("pending", "Dependency"),  # generated: waits for the others' generation
        ("pending", "generating (Resources)"),
    ]


def test_what_waits_on_a_failed_rank_is_blocked_once_nothing_else_runs():
    merge = RankView(0, "pending", detail="Dependency")
    views = _views(("failed", "boom"), ("pending", "Dependency"), ("running", ""))
    mark_blocked(views, merge)
    assert views[1].state == "pending" and merge.state == "pending"  # rank 2 still runs: Slurm has not decided
    views[2].state = "done"
    mark_blocked(views, merge)
    assert (views[1].state, views[1].detail) == ("blocked", NEVER) and merge.state == "blocked"


def test_nothing_is_blocked_without_a_failed_rank():
    merge = RankView(0, "pending", detail="Dependency")
    views = _views(("done", ""), ("pending", "Dependency"))
    mark_blocked(views, merge)
    assert views[1].state == "pending" and merge.state == "pending"
