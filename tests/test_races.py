"""The slot protocol under real races: deadlines at every step, kills at every step."""
from __future__ import annotations

import stress


def test_deadlines_and_kills_at_every_step_never_give_a_wrong_reply():
    totals = stress.run(seconds=10, clients=3, workers=2, slots=2)
    print("stress:", totals)
    assert totals["wrong"] == 0
    assert totals["ok"] > 1000, totals           # the run really exercised the channel
    assert totals["timeouts"] > 100, totals      # deadlines really landed
    assert totals["workers_killed"] >= 5, totals


def test_the_same_through_the_tcp_gateway_never_gives_a_wrong_reply():
    """Clients call through `ferry serve --listen` (a thread per connection): clients killed
    mid-call leave calls the gateway must give up, workers killed fail the calls they held;
    every reply is its own and every slot comes back (stress.run checks the census)."""
    totals = stress.run(seconds=8, clients=3, workers=2, slots=2, transport="tcp")
    print("stress tcp:", totals)
    assert totals["wrong"] == 0
    assert totals["ok"] > 500, totals
    assert totals["timeouts"] > 50, totals
    assert totals["workers_killed"] >= 3, totals
