"""regionblip_ros.throttle: bad inputs are counted per kind and logged first at once, then once per period."""

from regionblip_ros.throttle import ThrottledReporter


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reporter_with_log(period_s: float = 5.0):
    lines, clock = [], FakeClock()
    return ThrottledReporter(lines.append, period_s=period_s, clock=clock), lines, clock


def test_the_first_problem_of_a_kind_is_logged_at_once_naming_its_kind():
    reporter, lines, _ = reporter_with_log()
    assert reporter.report("image", "skipped an image: encoding 'yuv422' is not supported")
    assert lines == ["skipped an image: encoding 'yuv422' is not supported [image]"]


def test_repeats_within_the_period_are_counted_but_not_logged():
    reporter, lines, clock = reporter_with_log()
    reporter.report("image", "first")
    for _ in range(9):
        clock.now += 0.1
        assert not reporter.report("image", "again")
    assert len(lines) == 1
    assert reporter.counts() == {"image": 10}


def test_after_the_period_one_line_says_how_many_there_were():
    reporter, lines, clock = reporter_with_log()
    reporter.report("image", "first")
    for _ in range(3):
        clock.now += 1.0
        reporter.report("image", "again")
    clock.now += 2.5
    assert reporter.report("image", "latest")
    assert lines[-1] == "latest [image: 4 times in the last 5.5 s]"


def test_kinds_are_throttled_independently():
    reporter, lines, _ = reporter_with_log()
    reporter.report("image", "bad image")
    reporter.report("points", "bad cloud")
    reporter.report("image", "bad image again")
    assert lines == ["bad image [image]", "bad cloud [points]"]
    assert reporter.counts() == {"image": 2, "points": 1}
