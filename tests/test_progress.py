"""Progress bars: a live bar on a terminal, whole periodic lines in a log."""

import io

from pyro_ebm.progress import progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_whole_lines_not_carriage_returns():
    log = io.StringIO()
    bar = progress(range(1000), desc="train", stream=log, interval=3600.0)
    for _ in bar:
        bar.set_postfix_str("loss=1.0")
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 2  # the first state and, at close, the last one; nothing in between
    assert lines[0].startswith("train:   0% 0/1000")
    assert lines[-1].startswith("train: 100% 1000/1000") and lines[-1].endswith("loss=1.0]")


def test_a_terminal_gets_the_live_bar_and_disabled_bars_are_silent():
    tty = _Terminal()
    for _ in progress(range(5), desc="steps", stream=tty):
        pass
    assert "\r" in tty.getvalue() and "5/5" in tty.getvalue()
    quiet = io.StringIO()
    bar = progress(desc="evaluate", total=3, enabled=False, stream=quiet)
    bar.update()
    bar.set_postfix_str("MMD")
    bar.close()
    assert quiet.getvalue() == ""
