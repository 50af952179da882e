"""edge_ladder.parallel: progress bars on a terminal only (issue 14 item 14: tqdm filled `make
demo` logs with carriage-return updates)."""
import io

from edge_ladder.parallel import run_parallel


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal(capsys, monkeypatch):
    assert run_parallel(abs, [-1, -2, -3], workers=1, progress=True, desc="work") == [1, 2, 3]
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""               # a log file gets no \r updates
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert run_parallel(abs, [-1, -2, -3], workers=1, progress=True, desc="work") == [1, 2, 3]
    assert "\r" in terminal.getvalue() and "work: 100%" in terminal.getvalue()
    terminal.truncate(0)
    run_parallel(abs, [-1], workers=1, progress=False)
    assert terminal.getvalue() == ""
