"""Following claims not final yet never spends more of openIMIS's rate limit than allowed."""

from mediator.forwarder import ReadBudget


def test_at_most_the_rate_in_any_minute_and_the_wait_until_the_next_read():
    budget = ReadBudget()
    assert [budget.take(100.0 + i, 3) for i in range(5)] == [True, True, True, False, False]
    assert budget.wait_s(104.0) == 56.0  # the first read leaves the window at 160
    assert budget.take(160.5, 3), "a minute after the first read, one more may go"
    assert not budget.take(160.6, 3)
