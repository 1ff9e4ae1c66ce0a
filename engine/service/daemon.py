"""Where a running engine lives on disk, and how one is started in the background.

<cache>/run/            0700: only this user may reach anything inside
    engine.sock         the Unix socket (0600)
    engine.lock         flock'ed by the running engine: one engine per cache dir
    engine.json         pid, socket and TCP address of the running engine
    engine.log          what a detached engine prints
    token               0600 bearer token for --tcp, created on first use
<cache>/jobs.sqlite     job records
<cache>/jobs/N.log      each job's log
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import json
import os
import secrets
import socket
import stat
import subprocess
import sys
from pathlib import Path

from engine.core.errors import UserError
from engine.core.fs import write_atomic

SOCKET_NAME = "engine.sock"
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes on Linux, including the terminating NUL


def run_dir(cache: str | os.PathLike, create: bool = False) -> Path:
    d = Path(cache).resolve() / "run"
    # Never through a link: the engine would chmod the link's target 0700 and put its lock and
    # socket there (with `run -> /tmp`, in /tmp).
    if d.is_symlink():
        raise UserError(
            f"{str(d)!r} is a symlink; the engine keeps its socket and lock only in a real "
            "folder: remove the link"
        )
    if d.exists() and not d.is_dir():
        raise UserError(f"{str(d)!r} is not a folder; remove it so the engine can create it")
    if create:
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
    return d


def default_socket(cache: str | os.PathLike) -> Path:
    return run_dir(cache) / SOCKET_NAME


def read_info(cache: str | os.PathLike) -> dict | None:
    try:
        return json.loads((run_dir(cache) / "engine.json").read_text())
    except (OSError, ValueError):
        return None


def write_info(cache: str | os.PathLike, info: dict) -> None:
    write_atomic(run_dir(cache) / "engine.json", json.dumps(info) + "\n")


def socket_for(cache: str | os.PathLike) -> Path:
    """The socket of the engine serving this cache (it may have been started with --socket)."""
    info = read_info(cache)
    return Path(info["socket"]) if info and info.get("socket") else default_socket(cache)


# --- one engine per cache dir ----------------------------------------------------------------


def acquire_lock(cache: str | os.PathLike) -> int:
    """Hold `<cache>/run/engine.lock` for the life of this process (the kernel drops it when the
    process dies however it dies, so a crashed engine never blocks the next one)."""
    d = run_dir(cache, create=True)
    fd = os.open(d / "engine.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        info = read_info(cache) or {}
        raise UserError(
            f"an engine is already running for cache {str(Path(cache).resolve())!r} "
            f"(pid {info.get('pid', '?')}, socket {info.get('socket', '?')}); "
            "use it, stop it, or pass another --cache"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


# --- sockets ---------------------------------------------------------------------------------


def socket_answers(path: str | os.PathLike) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(os.fspath(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def bind_unix(path: str | os.PathLike) -> socket.socket:
    """A listening Unix socket at `path`, mode 0600. A socket file left by a dead engine is
    replaced; a live one, or any other file, is refused."""
    path = Path(path).absolute()
    if len(os.fsencode(path)) > _UNIX_PATH_MAX:
        raise UserError(
            f"socket path {str(path)!r} is longer than {_UNIX_PATH_MAX} bytes (a Unix limit); "
            "pass a shorter --socket or --cache"
        )
    if not path.parent.is_dir():
        raise UserError(f"folder {str(path.parent)!r} for the socket does not exist")
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise UserError(f"{str(path)!r} exists and is not a socket; choose another --socket")
        if socket_answers(path):
            raise UserError(
                f"another engine is listening on {str(path)!r}; stop it or choose another --socket"
            )
        path.unlink()  # stale: its engine died without cleaning up
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # created 0600 from the start, no window with wider permissions
    try:
        s.bind(os.fspath(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    s.listen(128)
    s.setblocking(False)
    return s


def parse_tcp(spec: str) -> tuple[str, int]:
    """HOST:PORT with a loopback HOST ([::1]:PORT for IPv6). Anything else is refused: a remote
    engine is reached through an SSH tunnel, never by listening on the network."""
    host, sep, port = spec.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--tcp {spec!r} is not HOST:PORT (e.g. 127.0.0.1:8765)")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UserError(
            f"--tcp {spec!r}: the engine only listens on loopback (127.0.0.1 or ::1); "
            "reach a remote engine through an SSH tunnel"
        )
    return host, int(port)


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError as e:
        s.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    s.listen(128)
    s.setblocking(False)
    return s


# --- the TCP token ---------------------------------------------------------------------------


def token_path(cache: str | os.PathLike) -> Path:
    return run_dir(cache) / "token"


def read_token(cache: str | os.PathLike) -> str | None:
    try:
        return token_path(cache).read_text().strip() or None
    except OSError:
        return None


def ensure_token(cache: str | os.PathLike) -> str:
    run_dir(cache, create=True)
    p = token_path(cache)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if p.stat().st_mode & 0o077:
            raise UserError(
                f"{str(p)!r} is readable by others; chmod 600 it or delete it"
            ) from None
        return p.read_text().strip()
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


# --- starting in the background --------------------------------------------------------------


def start_detached(
    cache: str | os.PathLike, socket_path: str | os.PathLike | None = None, args: list[str] = ()
) -> subprocess.Popen:
    """Start `python -m engine.service.server` in a new session (setsid): no controlling terminal, so
    closing the terminal or losing SSH does not stop it. Output goes to <cache>/run/engine.log."""
    cache = Path(cache).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    d = run_dir(cache, create=True)
    cmd = [sys.executable, "-m", "engine.service.server", "--cache", str(cache), *args]
    if socket_path:
        cmd += ["--socket", str(Path(socket_path).absolute())]
    with open(d / "engine.log", "ab") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
