"""What a script does first, before PyTorch loads (which takes seconds); imports nothing heavy."""
import os
import signal
import sys


def quiet_ctrl_c(when: str = "while starting up: nothing was done") -> None:
    """Ctrl-C (or SIGTERM, e.g. from a batch system) while the script is still importing ends in one line
    instead of a traceback from inside PyTorch's import, or nothing at all; cli.main restores the usual
    handling once the script runs, and sets this again (saying `when`) once it is done."""
    def handler(signum, frame):
        what = "interrupted" if signum == signal.SIGINT else "terminated"
        sys.stderr.write(f"\n{what} {when}\n")
        os._exit(128 + signum)  # 130 after Ctrl-C, 143 after SIGTERM, as the shell reports a death by signal
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
