"""One writer per run folder: an OS lock on OUTPUT_DIR/run.lock, held while the run lives."""

import errno
import fcntl
import os
import socket
import time

from utils.errors import RunError

LOCK_FILE = "run.lock"
# What flock raises on file systems that keep no locks (NFS without a lock manager, Lustre
# mounted without -o flock): the run goes on there, unguarded, with a warning.
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunLock:
    """An exclusive flock on folder/run.lock, which holds "pid host start" of its holder.

    The kernel drops the lock when its process dies, however it dies (kill -9 included), so
    a held lock always has a live holder. The file itself stays (unlinking it would let two
    processes lock two different files) and is emptied on release: a file that is not
    empty but not locked names a holder that died without releasing it.
    """

    def __init__(self, folder):
        self.folder, self.path = folder, os.path.join(folder, LOCK_FILE)
        self.file = None
        self.stale = ""  # "pid host start" of a holder that died holding the folder
        self.unsupported = ""  # why the file system refused to lock, if it did

    def acquire(self):
        """Take the lock, or raise RunError naming the live holder (pid, host, start)."""
        f = open(self.path, "a+")  # never truncates what a live holder wrote
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip().split(maxsplit=2)
            f.close()
            who = (f"process {holder[0]} on host {holder[1]}"
                   + (f" (since {holder[2]})" if len(holder) > 2 else "")
                   if len(holder) >= 2 else "another process")
            raise RunError(f"OUTPUT_DIR: {self.folder} is in use by {who}; wait for it to "
                           f"end or stop it, or choose another OUTPUT_DIR") from None
        except OSError as e:
            if e.errno not in _NO_LOCKS:
                f.close()
                raise
            self.unsupported = e.strerror
        f.seek(0)
        self.stale = f.read().strip()
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        f.flush()
        self.file = f
        return self

    def release(self):
        """Empty the file (the folder was left in order), then unlock it."""
        if self.file is None:
            return
        self.file.seek(0)
        self.file.truncate()
        self.file.flush()
        self.file.close()  # closing drops the flock
        self.file = None
