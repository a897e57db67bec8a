"""What a script does first, before PyTorch loads (which takes seconds); imports nothing heavy."""
import os
import signal
import sys


def quiet_ctrl_c() -> None:
    """Ctrl-C while the script is still importing ends in one line instead of a traceback from inside
    PyTorch's import; cli.main restores the usual Ctrl-C handling once the script runs."""
    def handler(signum, frame):
        sys.stderr.write("\ninterrupted while starting up: nothing was done\n")
        os._exit(130)
    signal.signal(signal.SIGINT, handler)
